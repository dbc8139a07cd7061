"""Using a trained classifier: the one loader and P(Fake) under its card, batch prediction, export
to other runtimes, and the provenance evidence in an image.
"""
