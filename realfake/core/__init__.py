"""The shared base: paths and constants, the error type, safe file operations, image decoding,
progress bars, the stage scripts' parser helpers, worker processes, the dataset layout.
"""
