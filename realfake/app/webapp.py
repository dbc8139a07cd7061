"""The Flask app: an upload page for people and a JSON API for programs, around one Predictor.

Routes: `GET /` (the upload page), `POST /` (the page with a verdict per uploaded image),
`POST /api/predict` (JSON per file), `GET /health` (model status), `GET /examples/<name>.png`
(images to try). Uploads are read into memory only, checked by their content, decoded once, and
never written to disk. The provenance evidence in each upload (content credentials, XMP,
generator settings) is read once from the bytes as received, checked against the trust anchors
given at start-up (TRUST_ANCHORS, a PEM file), and shown beside the verdict. Decoding, reading
provenance and inference run in at most MAX_CONCURRENT_WORK requests at a time; others wait up
to WORK_WAIT_SECONDS, then get 503 with Retry-After.
"""

import importlib.util
import io
import math
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request
from flask.wrappers import Request
from werkzeug.exceptions import HTTPException

from realfake.app.serving import (
    ALLOWED_DESCRIPTION,
    DecodedUpload,
    Predictor,
    UploadError,
    decode_upload,
    upload_size,
)
from realfake.app.settings import DEFAULTS
from realfake.app.webpage import (
    EXAMPLE_RECIPES,
    FRAME_SIDE,
    VERDICTS,
    card_summary,
    folder_examples,
    framed,
    make_examples,
    overlay,
    png_data_uri,
    provenance_panel,
    robustness_lines,
    shown,
)
from realfake.core.errors import PipelineError
from realfake.inference.classifier import ModelUnavailable
from realfake.inference.modelcard import card_path
from realfake.inference.provenance import (
    UNREADABLE,
    Provenance,
    load_trust_anchors,
    read_provenance,
)

EXTENSION = "realfake"
WORK_EXTENSION = "realfake.work"
EXAMPLES_EXTENSION = "realfake.examples"
TRUST_EXTENSION = "realfake.trust_anchors"
# The HTTP status of each kind of unusable upload; any other kind is a 400.
STATUS_BY_KIND = {"too_large": 413, "unsupported": 415}

web = Blueprint("web", __name__)


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory, where Werkzeug would spool big ones to disk.

    MAX_CONTENT_LENGTH bounds the whole body before it is read, so memory use stays bounded.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


class RequestError(PipelineError):
    """A request the app refuses as a whole, with its HTTP status and any extra headers."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class ModelHolder:
    """Serves the model that is on disk now: loaded on first need, and loaded again when its file
    or its card is replaced.

    Every request compares the model file and card with those loaded (two `stat` calls), so all
    the processes of a server (gunicorn's workers, one restarted after a crash included) serve
    the same model, the one at MODEL_PATH; none keeps answering with a model that was replaced.
    While a new model loads, the requests of that process wait for it; a model and card that do
    not belong together (between the two renames of a save) are refused with 503 until they do.
    """

    def __init__(self, model_path: Path, smoothgrad_samples: int):
        self.model_path = Path(model_path)
        self.smoothgrad_samples = smoothgrad_samples
        self._lock = threading.Lock()
        self._loaded: tuple[object, Predictor] | None = None
        self._failure: tuple[object, ModelUnavailable] | None = None

    def get(self) -> Predictor:
        """The Predictor of the model now at MODEL_PATH, or ModelUnavailable saying why there is
        none."""
        loaded = self._loaded
        if loaded is not None and loaded[0] == self._file_stamp():
            return loaded[1]
        with self._lock:
            stamp = self._file_stamp()
            if self._loaded is not None and self._loaded[0] == stamp:
                return self._loaded[1]
            self._loaded = None  # replaced: the old model is never served again
            if self._failure is not None and self._failure[0] == stamp:
                raise self._failure[1]
            try:
                predictor = Predictor(self.model_path, self.smoothgrad_samples)
            except ModelUnavailable as error:
                self._failure = (stamp, error)
                raise
            # Read after `stamp` was taken, so a file replaced meanwhile is read again next time.
            self._loaded = (stamp, predictor)
            return predictor

    def _file_stamp(self) -> object:
        stamps = []
        for path in (self.model_path, card_path(self.model_path)):
            try:
                status = path.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)


def _return_large_blocks_to_the_system() -> None:
    """Have glibc map every allocation of 1 MB or more on its own and unmap it when freed.

    By default glibc raises that threshold to the largest block freed so far, so after the first
    decoded image every image's 16 MB pixel blocks come from per-thread heaps that keep them:
    resident memory then grows with each request thread that ever decoded a large image.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
        return
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 1024 * 1024)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app; settings come from DEFAULTS, REALFAKE_* environment variables, test_config.

    The model is loaded here when its file exists, so the first request does not pay for it.
    Trust anchors (TRUST_ANCHORS, a PEM file; none by default) are read here too, and a file
    that cannot be used stops the start with a one-line PipelineError.
    """
    _return_large_blocks_to_the_system()
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("REALFAKE")
    if test_config is not None:
        app.config.from_mapping(test_config)
    # Before the model, which takes seconds to load: a mistyped path is reported at once.
    anchors_path = app.config.get("TRUST_ANCHORS")
    anchors = load_trust_anchors(str(anchors_path)) if anchors_path else None
    app.extensions[TRUST_EXTENSION] = anchors
    holder = ModelHolder(Path(app.config["MODEL_PATH"]), int(app.config["SMOOTHGRAD_SAMPLES"]))
    app.extensions[EXTENSION] = holder
    app.extensions[WORK_EXTENSION] = threading.BoundedSemaphore(
        int(app.config["MAX_CONCURRENT_WORK"])
    )
    app.extensions[EXAMPLES_EXTENSION] = {}
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
        model = card_summary(_holder().get())
        model_error = None
    except ModelUnavailable as error:
        model, model_error = None, _without_folders(str(error))
    context.setdefault("results", [])
    html = render_template(
        "index.html",
        model=model,
        model_error=model_error,
        allowed=ALLOWED_DESCRIPTION,
        examples=_example_list(),
        examples_folder=current_app.config.get("EXAMPLES_FOLDER"),
        max_files=current_app.config["MAX_FILES"],
        max_megabytes=current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024),
        **context,
    )
    return html, status


def _http_error(error: HTTPException):
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    messages = {413: f"the upload is too large: at most {limit / (1024 * 1024):g} MB per request"}
    length = request.content_length
    if error.code == 413 and length is not None and length <= limit:
        # A small body refused while its form was parsed: too many parts, or a big text field.
        messages[413] = (
            f"the form has more than {request.max_form_parts:,} parts, or a field that is not a "
            f"file holds more than {request.max_form_memory_size:,} bytes: send at most "
            f"{current_app.config['MAX_FILES']:,} files, each as one `file` part"
        )
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
    # Result pages embed the uploads: keep them out of caches and out of Referer headers.
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.method == "POST":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _uploads() -> list[tuple[str, bytes]]:
    """The (display name, bytes) of each uploaded `file` field, or the example asked for;
    RequestError if none or too many."""
    if request.mimetype != "multipart/form-data":
        raise RequestError(
            "send the images as multipart/form-data, one field named `file` per image", 415
        )
    example = request.form.get("example")
    if example and request.path == "/":
        return [(f"{example}.png", _example(example).data)]
    uploads = []
    for storage in request.files.getlist("file"):
        data = storage.read()
        name = (storage.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
        if not data and not name:
            continue  # a form submitted with no file chosen sends one empty part
        uploads.append((name or "upload", data))
    if not uploads:
        raise RequestError("no file: choose one or more images (multipart field `file`)")
    limit = int(current_app.config["MAX_FILES"])
    if len(uploads) > limit:
        raise RequestError(f"too many files: {len(uploads):,}; at most {limit:,} per request", 413)
    return uploads


def _check_sizes(uploads: list[tuple[str, bytes]]) -> list[UploadError | None]:
    """Each upload's header checked (None where fine); RequestError when together they hold more
    pixels than one request may decode."""
    max_pixels = int(current_app.config["MAX_IMAGE_PIXELS"])
    errors: list[UploadError | None] = []
    total = 0
    for _, data in uploads:
        try:
            width, height = upload_size(data, max_pixels)
        except UploadError as error:
            errors.append(error)
            continue
        errors.append(None)
        total += width * height
    limit = int(current_app.config["MAX_REQUEST_PIXELS"])
    if total > limit:
        raise RequestError(
            f"the images hold {total:,} pixels in all; the limit is {limit:,} per request: "
            "send fewer or smaller images",
            413,
        )
    return errors


@contextmanager
def _work_slot():
    """Hold one of MAX_CONCURRENT_WORK slots for decoding and inference, or raise a 503."""
    slots = current_app.extensions[WORK_EXTENSION]
    wait = float(current_app.config["WORK_WAIT_SECONDS"])
    if not slots.acquire(timeout=wait):
        retry = max(1, math.ceil(wait))
        raise RequestError(
            f"the server is busy with other images; try again in {retry} s",
            503,
            {"Retry-After": str(retry)},
        )
    try:
        yield
    finally:
        slots.release()


def _decode_all(
    uploads: list[tuple[str, bytes]], predictor: Predictor, display: bool
) -> list[DecodedUpload | UploadError]:
    """Each upload decoded once (call inside a work slot), or the UploadError that stopped it."""
    header_errors = _check_sizes(uploads)
    decoded: list[DecodedUpload | UploadError] = []
    for (_, data), error in zip(uploads, header_errors, strict=True):
        if error is not None:
            decoded.append(error)
            continue
        try:
            decoded.append(
                decode_upload(
                    data,
                    predictor.image_size,
                    int(current_app.config["MAX_IMAGE_PIXELS"]),
                    FRAME_SIDE if display else None,
                )
            )
        except UploadError as upload_error:
            decoded.append(upload_error)
    return decoded


def _provenance(data: bytes) -> Provenance:
    """The provenance evidence in an upload's bytes as received, checked against the app's
    trust anchors."""
    try:
        return read_provenance(data, trust_anchors=current_app.extensions[TRUST_EXTENSION])
    except Exception:  # the reader promises not to raise; the pixel verdict must outlive a slip
        current_app.logger.exception("reading provenance failed")
        return Provenance(error=UNREADABLE)


def _answer(
    name: str, upload: DecodedUpload, prediction, predictor: Predictor, provenance: Provenance
) -> dict:
    """One image's answer as the API gives it (the page shows the same fields)."""
    has_robustness = bool(robustness_lines(predictor.card.get("robustness")))
    stated = shown(prediction, upload.width, upload.height, predictor.image_size, has_robustness)
    return {
        "filename": name,
        "label": prediction.label,
        "verdict": stated.verdict,
        "uncertain": stated.uncertain,
        "probability_fake": prediction.probability_fake,
        "probability_real": prediction.probability_real,
        "threshold": prediction.threshold,
        "notices": list(stated.notices),
        "provenance": provenance.to_dict(),
    }


def _error_response(error: RequestError, page: bool):
    if page:
        body, status = _page(error.status, error=str(error))
        return body, status, error.headers
    response = _json_error(str(error), error.status)
    return (*response, error.headers)


@web.get("/")
def index():
    return _page()


@web.post("/")
def upload_page():
    try:
        uploads = _uploads()
        predictor = _holder().get()
        with _work_slot():
            decoded = _decode_all(uploads, predictor, display=True)
            good = [item for item in decoded if isinstance(item, DecodedUpload)]
            predictions = (
                predictor.predict_arrays(np.stack([item.model_view for item in good]))
                if good
                else []
            )
            results = []
            good_results = iter(zip(good, predictions, strict=True))
            for (name, data), item in zip(uploads, decoded, strict=True):
                if isinstance(item, UploadError):
                    results.append({"filename": name, "error": str(item), "kind": item.kind})
                    continue
                upload, prediction = next(good_results)
                provenance = _provenance(data)
                answer = _answer(name, upload, prediction, predictor, provenance)
                answer.update(
                    shown_verdict=VERDICTS[answer["verdict"]],
                    provenance_panel=provenance_panel(provenance),
                    image_uri=png_data_uri(framed(upload.display)),
                    no_heatmap=predictor.no_heatmap,
                    uncertain_band=predictor.classifier.uncertain_band,
                )
                if predictor.no_heatmap is None:
                    heatmap = predictor.heatmap(upload.model_view)
                    answer.update(
                        heatmap_uri=png_data_uri(overlay(upload.display, heatmap.values)),
                        heatmap_method=heatmap.method,
                    )
                results.append(answer)
    except RequestError as error:
        return _error_response(error, page=True)
    except ModelUnavailable:
        return _page(503)
    # Every file refused: the status says why, as the API's does for the first of them.
    refused = [result for result in results if "error" in result]
    status = STATUS_BY_KIND.get(refused[0]["kind"], 400) if len(refused) == len(results) else 200
    return _page(status, results=results)


@web.post("/api/predict")
def api_predict():
    try:
        uploads = _uploads()
        predictor = _holder().get()
        want_heatmap = request.args.get("heatmap", "").lower() in ("1", "true", "yes")
        with _work_slot():
            decoded = _decode_all(uploads, predictor, display=want_heatmap)
            for (name, _), item in zip(uploads, decoded, strict=True):
                if isinstance(item, UploadError):
                    status = STATUS_BY_KIND.get(item.kind, 400)
                    return _json_error(f"{name}: {item}", status, filename=name)
            predictions = predictor.predict_arrays(np.stack([item.model_view for item in decoded]))
            answers = []
            for (name, data), upload, prediction in zip(uploads, decoded, predictions, strict=True):
                answer = _answer(name, upload, prediction, predictor, _provenance(data))
                if want_heatmap and predictor.no_heatmap is not None:
                    answer["heatmap"] = None
                    answer["heatmap_method"] = predictor.no_heatmap
                elif want_heatmap:
                    heatmap = predictor.heatmap(upload.model_view)
                    answer["heatmap"] = png_data_uri(overlay(upload.display, heatmap.values))
                    answer["heatmap_method"] = heatmap.method
                answers.append(answer)
    except RequestError as error:
        return _error_response(error, page=False)
    except ModelUnavailable as error:
        return _json_error(_without_folders(str(error)), 503)
    return jsonify({"predictions": answers})


def _can_generate_examples() -> bool:
    """The generated examples are drawn from scikit-learn's sample photographs, which an install
    for exported models only (`.[onnx]`) does not have."""
    return importlib.util.find_spec("sklearn") is not None


def _example_list() -> list[dict]:
    generated = [
        {"name": name, "title": title, "from_folder": False}
        for name, title, _, _ in EXAMPLE_RECIPES
        if _can_generate_examples()
    ]
    from_folder = [
        {"name": example.name, "title": example.title, "from_folder": True}
        for example in _folder_examples().values()
    ]
    return generated + from_folder


def _folder_examples() -> dict:
    """The examples from EXAMPLES_FOLDER, read once per app."""
    examples = current_app.extensions[EXAMPLES_EXTENSION]
    if "folder" not in examples:
        try:
            examples["folder"] = folder_examples(current_app.config.get("EXAMPLES_FOLDER"))
        except PipelineError as error:  # two folders of one class: which labels hold is unclear
            current_app.logger.warning("no examples from EXAMPLES_FOLDER: %s", error)
            examples["folder"] = {}
    return examples["folder"]


def _example(name: str):
    """The named example image, made on first use; 404 for a name that is none."""
    examples = current_app.extensions[EXAMPLES_EXTENSION]
    if "generated" not in examples:
        try:
            image_size = _holder().get().image_size
        except ModelUnavailable:
            image_size = 32
        examples["generated"] = make_examples(image_size) if _can_generate_examples() else {}
    found = examples["generated"].get(name) or _folder_examples().get(name)
    if found is None:
        abort(404)
    return found


@web.get("/examples/<name>.png")
def example_image(name: str):
    return Response(_example(name).data, mimetype="image/png")


@web.get("/favicon.ico")
def favicon():
    return current_app.send_static_file("favicon.svg")


def _without_folders(message: str) -> str:
    """A message about the model with its folder left out: answers name files, not the server's
    folders."""
    folder = _holder().model_path.parent
    for written in {str(folder.resolve()), str(folder.absolute()), str(folder)} - {"."}:
        message = message.replace(written.rstrip("/") + "/", "")
    return message


@web.get("/health")
def health():
    holder = _holder()
    try:
        predictor = holder.get()
    except PipelineError as error:
        return jsonify(
            {
                "status": "unavailable",
                "model": holder.model_path.name,
                "error": _without_folders(str(error)),
            }
        ), 503
    return jsonify(
        {
            "status": "ok",
            "model": holder.model_path.name,
            "model_sha256": predictor.model_sha256,
            "image_size": predictor.image_size,
            "threshold": predictor.threshold,
            "uncertain_band": predictor.classifier.uncertain_band,
            "test_time_flip": predictor.test_time_flip,
            "heatmap_method": predictor.heatmap_method,
        }
    )
