"""Steps that read and write datasets: unzip, split, merge, clean, augment offline, move, and the
synthetic demo data.
"""
