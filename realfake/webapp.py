"""The Flask app: an upload page for people and a JSON API for programs, around one Predictor.

Routes: `GET /` (the upload page), `POST /` (the page with a verdict per uploaded image),
`POST /api/predict` (JSON per file), `GET /health` (model status). Uploads are read into memory
only, checked by their content, and never written to disk.
"""

import io
import threading
from pathlib import Path

import numpy as np
from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from flask.wrappers import Request
from werkzeug.exceptions import HTTPException

from realfake.config import MODEL_PATH
from realfake.errors import PipelineError
from realfake.inference import ModelUnavailable
from realfake.serving import (
    ALLOWED_DESCRIPTION,
    DEFAULT_MAX_IMAGE_PIXELS,
    Predictor,
    UploadError,
    decode_upload,
    overlay,
    png_data_uri,
    thumbnail,
)

DEFAULTS = {
    "MODEL_PATH": str(MODEL_PATH),
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    "MAX_FILES": 16,
    "MAX_IMAGE_PIXELS": DEFAULT_MAX_IMAGE_PIXELS,
    "SMOOTHGRAD_SAMPLES": 16,
}
VERDICTS = {"Fake": "AI-generated", "Real": "Real"}
EXTENSION = "realfake"
# templates/ and static/ sit beside the stage scripts, not inside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

web = Blueprint("web", __name__)


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory, where Werkzeug would spool big ones to disk.

    MAX_CONTENT_LENGTH bounds the whole body before it is read, so memory use stays bounded.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


class ModelHolder:
    """Loads the model once, on first need, and again only if its file changes."""

    def __init__(self, model_path: Path, smoothgrad_samples: int):
        self.model_path = Path(model_path)
        self.smoothgrad_samples = smoothgrad_samples
        self._lock = threading.Lock()
        self._predictor: Predictor | None = None
        self._failure: tuple[object, ModelUnavailable] | None = None

    def get(self) -> Predictor:
        """The loaded Predictor, or ModelUnavailable saying why there is none."""
        if self._predictor is not None:
            return self._predictor
        with self._lock:
            if self._predictor is not None:
                return self._predictor
            stamp = self._file_stamp()
            if self._failure is not None and self._failure[0] == stamp:
                raise self._failure[1]
            try:
                self._predictor = Predictor(self.model_path, self.smoothgrad_samples)
            except ModelUnavailable as error:
                self._failure = (stamp, error)
                raise
            return self._predictor

    def _file_stamp(self) -> object:
        try:
            status = self.model_path.stat()
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app; settings come from DEFAULTS, REALFAKE_* environment variables, test_config.

    The model is loaded here when its file exists, so the first request does not pay for it.
    """
    app = Flask(__name__, root_path=str(PROJECT_ROOT))
    app.request_class = InMemoryRequest
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("REALFAKE")
    if test_config is not None:
        app.config.from_mapping(test_config)
    holder = ModelHolder(Path(app.config["MODEL_PATH"]), int(app.config["SMOOTHGRAD_SAMPLES"]))
    app.extensions[EXTENSION] = holder
    try:
        holder.get()
    except ModelUnavailable as error:
        app.logger.warning("%s", error)
    app.register_blueprint(web)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_security_headers)
    return app


def _holder() -> ModelHolder:
    return current_app.extensions[EXTENSION]


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/health"


def _json_error(message: str, status: int, **extra):
    return jsonify({"error": message, "status": status, **extra}), status


def _page(status: int = 200, **context):
    """The upload page with whatever results, errors or notices `context` holds."""
    try:
        model = _holder().get().card_summary()
        model_error = None
    except ModelUnavailable as error:
        model, model_error = None, str(error)
    context.setdefault("results", [])
    html = render_template(
        "index.html",
        model=model,
        model_error=model_error,
        allowed=ALLOWED_DESCRIPTION,
        max_files=current_app.config["MAX_FILES"],
        max_megabytes=current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024),
        **context,
    )
    return html, status


def _http_error(error: HTTPException):
    messages = {
        413: "the upload is too large: at most "
        f"{current_app.config['MAX_CONTENT_LENGTH'] / (1024 * 1024):g} MB per request",
    }
    message = messages.get(error.code, error.description or error.name)
    if _wants_json():
        return _json_error(message, error.code or 500)
    return _page(error.code or 500, error=message)


def _unexpected_error(error: Exception):
    current_app.logger.exception("unexpected error")
    message = "internal error: the image could not be processed"
    if _wants_json():
        return _json_error(message, 500)
    return _page(500, error=message)


def _security_headers(response):
    # data: images carry the thumbnails and heatmaps; nothing loads from anywhere else.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _uploads() -> list[tuple[str, bytes]]:
    """The (display name, bytes) of each uploaded `file` field; UploadError if none or too many."""
    if request.mimetype != "multipart/form-data":
        raise UploadError(
            "send the images as multipart/form-data, one field named `file` per image", 415
        )
    uploads = []
    for storage in request.files.getlist("file"):
        data = storage.read()
        name = (storage.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
        if not data and not name:
            continue  # a form submitted with no file chosen sends one empty part
        uploads.append((name or "upload", data))
    if not uploads:
        raise UploadError("no file: choose one or more images (multipart field `file`)")
    limit = int(current_app.config["MAX_FILES"])
    if len(uploads) > limit:
        raise UploadError(f"too many files: {len(uploads):,}; at most {limit:,} per request", 413)
    return uploads


def _decode(data: bytes, image_size: int | None) -> np.ndarray:
    return decode_upload(data, image_size, int(current_app.config["MAX_IMAGE_PIXELS"]))


@web.get("/")
def index():
    return _page()


@web.post("/")
def upload_page():
    try:
        uploads = _uploads()
        predictor = _holder().get()
    except UploadError as error:
        return _page(error.status, error=str(error))
    except ModelUnavailable:
        return _page(503)

    results, decoded = [], []
    for name, data in uploads:
        try:
            decoded.append(_decode(data, predictor.image_size))
            results.append({"filename": name, "data": data})
        except UploadError as error:
            results.append({"filename": name, "error": str(error)})
    good = [result for result in results if "error" not in result]
    predictions = predictor.predict_arrays(np.stack(decoded)) if decoded else []
    for result, model_view, prediction in zip(good, decoded, predictions, strict=True):
        heatmap = predictor.heatmap(model_view)
        result.update(
            verdict=VERDICTS[prediction.label],
            label=prediction.label,
            probability_fake=prediction.probability_fake,
            threshold=prediction.threshold,
            image_uri=png_data_uri(thumbnail(_decode(result.pop("data"), None))),
            heatmap_uri=png_data_uri(overlay(model_view, heatmap.values)),
            heatmap_method=heatmap.method,
        )
    status = 200 if good else 400
    return _page(status, results=results)


@web.post("/api/predict")
def api_predict():
    try:
        uploads = _uploads()
        predictor = _holder().get()
    except UploadError as error:
        return _json_error(str(error), error.status)
    except ModelUnavailable as error:
        return _json_error(str(error), 503)

    images = []
    for name, data in uploads:
        try:
            images.append(_decode(data, predictor.image_size))
        except UploadError as error:
            return _json_error(f"{name}: {error}", error.status, filename=name)
    want_heatmap = request.args.get("heatmap", "").lower() in ("1", "true", "yes")
    answers = []
    predictions = predictor.predict_arrays(np.stack(images))
    for (name, _), image, prediction in zip(uploads, images, predictions, strict=True):
        answer = {
            "filename": name,
            "label": prediction.label,
            "probability_fake": prediction.probability_fake,
            "probability_real": prediction.probability_real,
            "threshold": prediction.threshold,
        }
        if want_heatmap:
            heatmap = predictor.heatmap(image)
            answer["heatmap"] = png_data_uri(overlay(image, heatmap.values))
            answer["heatmap_method"] = heatmap.method
        answers.append(answer)
    return jsonify({"predictions": answers})


@web.get("/health")
def health():
    holder = _holder()
    try:
        predictor = holder.get()
    except PipelineError as error:
        return jsonify(
            {"status": "unavailable", "model": str(holder.model_path), "error": str(error)}
        ), 503
    return jsonify(
        {
            "status": "ok",
            "model": str(holder.model_path),
            "image_size": predictor.image_size,
            "threshold": predictor.threshold,
            "test_time_flip": predictor.test_time_flip,
            "heatmap_method": predictor.heatmap_method,
        }
    )
