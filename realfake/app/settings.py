"""The web app's settings and their defaults, apart from the app so that `app.py --help` can
print them without importing Flask, NumPy or TensorFlow."""

from realfake.core.config import DATA_DIR, DEFAULT_MAX_IMAGE_PIXELS, MODEL_PATH

DEFAULTS = {
    "MODEL_PATH": str(MODEL_PATH),
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    "MAX_FILES": 16,
    "MAX_IMAGE_PIXELS": DEFAULT_MAX_IMAGE_PIXELS,
    # Two full-size images per request; a 50-megapixel PNG takes about 200 MB to decode.
    "MAX_REQUEST_PIXELS": 2 * DEFAULT_MAX_IMAGE_PIXELS,
    # Requests decoding or predicting at once; more would only queue for the same CPU cores
    # while each holds its decoded images in memory.
    "MAX_CONCURRENT_WORK": 2,
    "WORK_WAIT_SECONDS": 10.0,
    "SMOOTHGRAD_SAMPLES": 16,
    # A PEM file of CA certificates that content-credential signers are checked against (none:
    # signatures are verified, signers not judged).
    "TRUST_ANCHORS": None,
    # A labelled folder (Fake/Real or aliases) of which the first images of each class are also
    # offered as one-click examples, when it exists; empty: none.
    "EXAMPLES_FOLDER": str(DATA_DIR / "test"),
}
