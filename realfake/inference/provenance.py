"""Provenance evidence inside an uploaded image: content credentials (C2PA), the IPTC digital
source type in XMP, and the generation settings that image generators write into PNG text chunks
and EXIF.

A pixel classifier guesses; these, where present, are declarations. They are read from the
uploaded bytes, never from a re-encoded copy, since re-encoding drops all of them. Content
credentials are signed and bound to the pixels by a hash, and are checked offline with the
official C2PA library; everything else is unsigned metadata that anyone can write, so it is
reported as a claim. All of it is attacker-controlled: every reader is bounded in what it parses,
and any failure becomes `error="unreadable provenance data"` instead of an exception.

Example:
    anchors = load_trust_anchors("my-trust-list.pem")  # optional
    provenance = read_provenance(upload_bytes, trust_anchors=anchors)
    print(provenance.summary)
"""

import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from realfake.core.errors import PipelineError
from realfake.core.images import png_text_past_limit

UNREADABLE = "unreadable provenance data"

# Uploads are capped by the app long before this; the cap keeps a direct caller from handing
# the C2PA library or Pillow an arbitrarily large buffer.
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Largest metadata text (XMP packet, PNG text chunk, EXIF field) that is parsed at all. ComfyUI
# workflows run to a few hundred kB; anything far larger is not a generator's settings.
MAX_TEXT_CHARS = 1_000_000
MAX_TRUST_ANCHOR_BYTES = 1_000_000
# Longest text kept from a field in a headline or claim, and in an expandable detail.
MAX_NAME_CHARS = 200
MAX_DETAIL_CHARS = 10_000

SIGNATURE_TRUSTED = "valid, trusted"
SIGNATURE_NOT_CHECKED = "valid, signer not checked against a trust list"
SIGNATURE_NOT_ON_TRUST_LIST = "valid, signer not on your trust list"
SIGNATURE_INVALID = "invalid"

SOURCE_C2PA = "c2pa"
SOURCE_XMP = "xmp"
SOURCE_GENERATOR_METADATA = "generator metadata"

# IPTC digital source type terms (https://cv.iptc.org/newscodes/digitalsourcetype/) in words.
DIGITAL_SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "generative AI",
    "compositeWithTrainedAlgorithmicMedia": "composite with generative AI",
    "algorithmicallyEnhanced": "enhanced by an algorithm",
    "algorithmicMedia": "made by an algorithm (not trained AI)",
    "compositeSynthetic": "composite with synthetic elements",
    "digitalCapture": "camera capture",
    "computationalCapture": "camera capture (computational)",
    "compositeCapture": "composite of camera captures",
    "negativeFilm": "scan of a film negative",
    "positiveFilm": "scan of a film positive",
    "print": "scan of a print",
    "humanEdits": "edited by a person",
    "minorHumanEdits": "minor edits by a person",
    "composite": "composite",
    "digitalArt": "digital art made by a person",
    "digitalCreation": "digital art made by a person",
    "dataDrivenMedia": "data-driven media",
    "screenCapture": "screen capture",
    "virtualRecording": "virtual recording",
    "softwareImage": "made by software",
}
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})

# Validation codes of the C2PA specification for the hash that binds a manifest to the asset.
_BINDING_MATCH = frozenset(
    {
        "assertion.dataHash.match",
        "assertion.boxesHash.match",
        "assertion.bmffHash.match",
        "assertion.collectionHash.match",
    }
)
_BINDING_MISMATCH = frozenset(
    {
        "assertion.dataHash.mismatch",
        "assertion.boxesHash.mismatch",
        "assertion.bmffHash.mismatch",
        "assertion.collectionHash.mismatch",
    }
)
# Failures that concern trust, not whether the signature itself is intact.
_TRUST_FAILURES = frozenset({"signingCredential.untrusted", "timeStamp.untrusted"})
# Every status names the manifest it concerns, and the claim signature or the assertion in it.
_STATUS_URL = re.compile(
    r"self#jumbf=/?c2pa/([^/]+)(?:/(c2pa\.signature|c2pa\.assertions/([^/]+)))?"
)
_SIGNATURE_PLACE = "c2pa.signature"
_SIGNATURE_CODE_PREFIXES = ("claimSignature.", "signingCredential.", "timeStamp.")
# Assertions a failure can concern, in words; any other is named by its label.
_ASSERTION_NAMES = {
    "cawg.identity": "identity assertion",
    "c2pa.actions": "actions assertion",
    "c2pa.ingredient": "ingredient assertion",
    "c2pa.thumbnail": "thumbnail",
    "c2pa.metadata": "metadata assertion",
    "cawg.training-mining": "training and mining assertion",
}
# Lines kept from a manifest's validation, and codes named in each, however many it reports.
MAX_VALIDATION_LINES = 10
MAX_CODES_PER_LINE = 10

_XMP_NAMESPACES = {
    "iptc_extension": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
}
_DIGITAL_SOURCE_TYPE_TAG = "{" + _XMP_NAMESPACES["iptc_extension"] + "}DigitalSourceType"
_CREATOR_TOOL_TAG = "{" + _XMP_NAMESPACES["xmp"] + "}CreatorTool"
_REMOTE_MANIFEST_TAG = "{http://purl.org/dc/terms/}provenance"

_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286

# Names that, in an EXIF Software field or XMP CreatorTool, say an image generator wrote the file.
_GENERATOR_NAMES = re.compile(
    r"novelai|midjourney|dall[\s·-]?e|stable[\s-]?diffusion|comfyui|invokeai|automatic1111|"
    r"fooocus|swarmui|firefly|imagen|ideogram|leonardo\.ai|dreamstudio|draw things|"
    r"flux\.?1|gpt-4o|bing image creator|nightcafe|craiyon",
    re.IGNORECASE,
)
# One "Key: value" pair of the AUTOMATIC1111 settings line (its own pattern, values may be quoted).
_A1111_PARAMETER = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

CSV_COLUMNS = ("provenance_source", "declared_origin", "generator", "signature")


class _Unreadable(Exception):
    """Metadata that is present but too large or malformed to read."""


@dataclass(frozen=True)
class Provenance:
    """What an image's own metadata says about where it came from, and how far to believe it.

    `source` names the strongest evidence found ("c2pa", "xmp", "generator metadata", or None);
    `signature`, `signer`, `signed_at` and `matches_image` are set only for content credentials,
    `signature` for the active manifest's own signature; `failures` say what makes the
    credentials fail validation and where (the signature, the binding to the pixels, an
    assertion, an earlier version in the file's history), `notes` what was not confirmed without
    making them fail (an identity credential on no trust list, an earlier version whose failure
    the signer recorded); `claims` are plain-language lines for every piece of evidence;
    `details` hold long texts such as the prompt, for an expandable view only; `error` is one
    line when some metadata was present but could not be read.
    """

    source: str | None = None
    declared_origin: str | None = None
    digital_source_type: str | None = None
    generator: str | None = None
    signer: str | None = None
    signed_at: str | None = None
    signature: str | None = None
    matches_image: bool | None = None
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()
    details: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def declares_ai_with_valid_credentials(self) -> bool:
        """True when credentials that pass validation as a whole (an intact signature, still
        matching the pixels, no failure in any assertion or earlier version) declare generative
        AI."""
        return (
            self.source == SOURCE_C2PA
            and not self.failures
            and self.signature is not None
            and self.signature.startswith("valid")
            and self.matches_image is True
            and self.digital_source_type in AI_SOURCE_TYPES
        )

    @property
    def credentials(self) -> str | None:
        """The verdict on the content credentials in one line: "invalid: " and what fails where,
        or the signature's state and what was not confirmed; None without credentials."""
        if self.source != SOURCE_C2PA:
            return None
        if self.failures:
            return "invalid: " + "; ".join(self.failures)
        return "; ".join((self.signature or "signature state unknown", *self.notes))

    @property
    def summary(self) -> str:
        """One plain line on what the evidence means."""
        if self.source is None:
            if self.claims:
                return "No checkable provenance: the image's metadata declares no origin."
            if self.error:
                return (
                    "The image carries metadata that could not be read, so it says nothing "
                    "either way."
                )
            return (
                "No provenance data found. Most sites strip it, so its absence says nothing "
                "about whether the image is real."
            )
        if self.source == SOURCE_C2PA:
            return self._credentials_summary()
        what = _origin_phrase(self.declared_origin, self.generator)
        return f"The image's metadata claims {what}; unsigned, so anyone could have written it."

    def _credentials_summary(self) -> str:
        if self.signature == SIGNATURE_INVALID:
            return "The image has content credentials, but they fail validation: ignore them."
        if self.matches_image is False:
            return (
                "The image has signed content credentials, but the manifest no longer matches "
                "the image: it was changed after signing."
            )
        trust = {
            SIGNATURE_TRUSTED: "signer on your trust list",
            SIGNATURE_NOT_CHECKED: "signer not checked against a trust list",
            SIGNATURE_NOT_ON_TRUST_LIST: "signer not on your trust list",
        }.get(self.signature or "", "signature state unknown")
        what = _origin_phrase(self.declared_origin, self.generator)
        if self.failures:
            return (
                f"Signed content credentials declare {what} ({trust}), but they fail "
                f"validation: {'; '.join(self.failures)}."
            )
        also = f"; also, {'; '.join(self.notes)}" if self.notes else ""
        return f"Signed content credentials declare {what} ({trust}){also}."

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, with the derived `summary` and AI declaration included."""
        return {
            "source": self.source,
            "declared_origin": self.declared_origin,
            "digital_source_type": self.digital_source_type,
            "generator": self.generator,
            "signer": self.signer,
            "signed_at": self.signed_at,
            "signature": self.signature,
            "matches_image": self.matches_image,
            "credentials": self.credentials,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "declares_ai_with_valid_credentials": self.declares_ai_with_valid_credentials,
            "summary": self.summary,
            "claims": list(self.claims),
            "details": dict(self.details),
            "error": self.error,
        }

    def csv_fields(self) -> dict[str, str]:
        """The columns of CSV_COLUMNS for batch prediction, empty where nothing is known; the
        `signature` column holds the whole verdict on the credentials, failures included."""
        values = (self.source, self.declared_origin, self.generator, self.credentials)
        return {column: value or "" for column, value in zip(CSV_COLUMNS, values, strict=True)}


def _origin_phrase(declared_origin: str | None, generator: str | None) -> str:
    """'the origin is generative AI, made with X' style phrase for a summary."""
    if declared_origin and generator:
        return f"the origin is {declared_origin}, made with {generator}"
    if declared_origin:
        return f"the origin is {declared_origin}"
    if generator:
        return f"it was made with {generator}"
    return "no origin"


@dataclass
class _Evidence:
    """What one reader found; the first reader to set a field wins."""

    source: str | None = None
    digital_source_type: str | None = None
    generator: str | None = None
    signer: str | None = None
    signed_at: str | None = None
    signature: str | None = None
    matches_image: bool | None = None

    def __post_init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.claims: list[str] = []
        self.details: list[tuple[str, str]] = []


def read_provenance(data: bytes, *, trust_anchors: str | None = None) -> Provenance:
    """Read every kind of provenance evidence from an image's bytes; never raises on bad data.

    Args:
        data: the uploaded file exactly as received.
        trust_anchors: PEM certificates (from `load_trust_anchors`) whose signers count as
            trusted; None leaves the signer unchecked.
    """
    if len(data) > MAX_INPUT_BYTES:
        return Provenance(error=UNREADABLE)
    found: list[_Evidence] = []
    unreadable = False
    for reader in (_read_c2pa, _read_embedded_metadata):
        try:
            found.extend(reader(data, trust_anchors))
        except _Unreadable:
            unreadable = True
    return _combine(found, error=UNREADABLE if unreadable else None)


def _combine(found: list[_Evidence], error: str | None) -> Provenance:
    """The strongest evidence (signed credentials, then XMP, then generator settings) makes the
    headline; every piece adds its claims and details.

    Headline fields are never mixed across sources: an unsigned XMP claim must not pass for
    something the signed manifest declares.
    """
    order = (SOURCE_C2PA, SOURCE_XMP, SOURCE_GENERATOR_METADATA, None)
    found = sorted(found, key=lambda evidence: order.index(evidence.source))
    claims = tuple(claim for evidence in found for claim in evidence.claims)
    details = tuple(detail for evidence in found for detail in evidence.details)
    if not found or found[0].source is None:
        return Provenance(claims=claims, details=details, error=error)
    strongest = found[0]
    source_type = strongest.digital_source_type
    return Provenance(
        source=strongest.source,
        declared_origin=_origin_of(source_type),
        digital_source_type=source_type,
        generator=strongest.generator,
        signer=strongest.signer,
        signed_at=strongest.signed_at,
        signature=strongest.signature,
        matches_image=strongest.matches_image,
        failures=tuple(strongest.failures),
        notes=tuple(strongest.notes),
        claims=claims,
        details=details,
        error=error,
    )


def _origin_of(source_type: str | None) -> str | None:
    """The digital source type in words."""
    if source_type is None:
        return None
    return DIGITAL_SOURCE_TYPES.get(source_type, f"an unrecognised source type ({source_type})")


# Content credentials (C2PA) ------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _c2pa_context(trust_anchors: str | None):
    """A C2PA reading context that never goes to the network, with the user's trust anchors."""
    # Imported here, not at the top: the import takes about 60 ms, paid by the first read only.
    import c2pa

    verify = {
        "remote_manifest_fetch": False,
        "ocsp_fetch": False,
        # Without the user's anchors there is nothing to judge trust against, so the library
        # is not asked to; the signature itself is still verified.
        "verify_trust": trust_anchors is not None,
        "verify_timestamp_trust": trust_anchors is not None,
    }
    settings: dict[str, Any] = {"verify": verify}
    if trust_anchors is not None:
        settings["trust"] = {"user_anchors": trust_anchors}
    return c2pa.Context.from_dict(settings)


def _read_c2pa(data: bytes, trust_anchors: str | None) -> list[_Evidence]:
    """The active C2PA manifest and its validation, or nothing when the file carries none."""
    import c2pa

    try:
        reader = c2pa.Reader.try_create(
            None, io.BytesIO(data), None, context=_c2pa_context(trust_anchors)
        )
    except c2pa.C2paError.NotSupported:
        return []  # a file type the library does not read; it cannot carry a manifest for it
    except c2pa.C2paError as error:
        # A manifest stored online, named in the XMP (which reports the address): reading it
        # would mean fetching a URL the uploader chose, so it is left unread.
        if isinstance(error, c2pa.C2paError.RemoteManifest) or str(error).startswith("Remote"):
            return []
        raise _Unreadable from error
    except Exception as error:  # the library raises many kinds for damaged manifests
        raise _Unreadable from error
    if reader is None:
        return []
    try:
        with reader:
            manifest = reader.get_active_manifest()
            results = reader.get_validation_results()
    except Exception as error:
        raise _Unreadable from error
    if not isinstance(manifest, dict):
        raise _Unreadable
    return [_credentials_evidence(manifest, results, trusted_anchors=trust_anchors is not None)]


@dataclass(frozen=True)
class _Status:
    """One validation status: its code, and the claim signature or assertion it concerns
    (`place` is "c2pa.signature", an assertion's label, or None for the manifest itself)."""

    code: str
    place: str | None


def _statuses(entries: Any) -> list[_Status]:
    """The statuses of one list (success, informational or failure) of the library's results."""
    found = []
    for entry in entries[:1000] if isinstance(entries, list) else ():
        if not (isinstance(entry, dict) and isinstance(entry.get("code"), str)):
            continue
        url = entry.get("url")
        match = _STATUS_URL.match(url) if isinstance(url, str) else None
        place = (match.group(3) or match.group(2)) if match else None
        found.append(_Status(entry["code"], place))
    return found


def _outcome(results: Any, kind: str) -> list[_Status]:
    """Statuses of one kind for the active manifest of a results map."""
    active = results.get("activeManifest") if isinstance(results, dict) else None
    return _statuses(active.get(kind)) if isinstance(active, dict) else []


def _concerns_signature(status: _Status) -> bool:
    if status.place is None:
        return status.code.startswith(_SIGNATURE_CODE_PREFIXES)
    return status.place == _SIGNATURE_PLACE


def _untrusted(code: str) -> bool:
    """A credential that is not on a trust list: a question of trust, not of integrity."""
    return code in _TRUST_FAILURES or code.endswith(".untrusted")


def _signature_state(successes: set[str], failures: set[str], trusted_anchors: bool) -> str:
    """One of the SIGNATURE_* states from the codes that concern the claim signature."""
    if failures - _TRUST_FAILURES or "claimSignature.validated" not in successes:
        return SIGNATURE_INVALID
    if not trusted_anchors:
        return SIGNATURE_NOT_CHECKED
    if "signingCredential.trusted" in successes and not failures & _TRUST_FAILURES:
        return SIGNATURE_TRUSTED
    return SIGNATURE_NOT_ON_TRUST_LIST


def _codes(statuses: list[_Status]) -> str:
    """'a, b' for the distinct codes of some statuses, in order, capped."""
    codes = list(dict.fromkeys(status.code for status in statuses))
    return ", ".join(codes[:MAX_CODES_PER_LINE])


def _assertion_name(label: str | None) -> str:
    """'identity assertion (cawg.identity)' for an assertion label, 'the manifest' for None."""
    if label is None:
        return "the manifest"
    label = _short(label) or "unnamed"
    base = re.sub(r"(\.v\d+)?(__\d+)?$", "", label)
    for prefix, name in _ASSERTION_NAMES.items():
        if base == prefix or base.startswith(prefix + "."):
            return f"{name} ({label})"
    return f"assertion {label}"


def _active_manifest_lines(evidence: _Evidence, results: Any, trusted_anchors: bool) -> None:
    """Signature state, binding to the pixels, and what fails where in the active manifest."""
    successes = _outcome(results, "success")
    failures = _outcome(results, "failure")
    success_codes = {status.code for status in successes}
    signature = [status for status in failures if _concerns_signature(status)]
    binding = [status for status in failures if status.code in _BINDING_MISMATCH]
    others = [status for status in failures if status not in signature and status not in binding]

    signature_codes = {status.code for status in signature}
    evidence.signature = _signature_state(success_codes, signature_codes, trusted_anchors)
    if evidence.signature == SIGNATURE_INVALID:
        broken = [status for status in signature if not _untrusted(status.code)]
        evidence.failures.append(
            f"the manifest's signature does not verify ({_codes(broken)})"
            if broken
            else "the manifest's signature was not validated"
        )
    if binding:
        evidence.matches_image = False
        evidence.failures.append(f"the image was changed after signing ({_codes(binding)})")
    elif success_codes & _BINDING_MATCH:
        evidence.matches_image = True

    trust_words = (
        "not on your trust list" if trusted_anchors else "not checked against a trust list"
    )
    places = dict.fromkeys(status.place for status in others)
    for place in places:
        here = [status for status in others if status.place == place]
        untrusted = [status for status in here if _untrusted(status.code)]
        broken = [status for status in here if not _untrusted(status.code)]
        name = _assertion_name(place)
        if broken:
            evidence.failures.append(f"{name} fails validation ({_codes(broken)})")
        if untrusted:
            evidence.notes.append(f"{name}: credential {trust_words} ({_codes(untrusted)})")


def _history_lines(evidence: _Evidence, manifest: dict, results: Any) -> None:
    """Failures in the file's history: earlier versions (ingredients) whose credentials fail
    validation now, and those whose failure the signer recorded when adding them."""
    ingredients = manifest.get("ingredients")
    ingredients = (
        [item for item in ingredients if isinstance(item, dict)]
        if isinstance(ingredients, list)
        else []
    )
    titles = {
        item.get("label"): _short(item.get("title")) or "untitled"
        for item in ingredients
        if isinstance(item.get("label"), str)
    }
    failing_now = set()
    deltas = results.get("ingredientDeltas") if isinstance(results, dict) else None
    for delta in deltas[:1000] if isinstance(deltas, list) else ():
        if not isinstance(delta, dict):
            continue
        statuses = delta.get("validationDeltas")
        failed = _statuses(statuses.get("failure")) if isinstance(statuses, dict) else []
        broken = [status for status in failed if not _untrusted(status.code)]
        if not broken:
            continue
        match = _STATUS_URL.match(str(delta.get("ingredientAssertionURI")))
        label = match.group(3) if match else None
        failing_now.add(label)
        title = titles.get(label, "untitled")
        evidence.failures.append(
            f"an earlier version in this file's history ({title}) has invalid credentials "
            f"({_codes(broken)})"
        )
    for item in ingredients:
        if item.get("label") in failing_now:
            continue
        recorded = item.get("validation_results")
        failed = _outcome(recorded, "failure") + _statuses(item.get("validation_status"))
        nested = recorded.get("ingredientDeltas") if isinstance(recorded, dict) else None
        for delta in nested[:1000] if isinstance(nested, list) else ():
            statuses = delta.get("validationDeltas") if isinstance(delta, dict) else None
            if isinstance(statuses, dict):
                failed += _statuses(statuses.get("failure"))
        broken = [status for status in failed if not _untrusted(status.code)]
        if broken:
            title = _short(item.get("title")) or "untitled"
            evidence.notes.append(
                f"an earlier version in this file's history ({title}) failed validation when "
                f"it was added, as the signer recorded ({_codes(broken)})"
            )


def _credentials_evidence(manifest: dict, results: Any, trusted_anchors: bool) -> _Evidence:
    """Turn the active manifest and its validation into evidence and plain-language claims."""
    evidence = _Evidence(source=SOURCE_C2PA)
    _active_manifest_lines(evidence, results, trusted_anchors)
    _history_lines(evidence, manifest, results)
    del evidence.failures[MAX_VALIDATION_LINES:]
    del evidence.notes[MAX_VALIDATION_LINES:]

    claim_generator = _claim_generator(manifest)
    signature_info = manifest.get("signature_info")
    if isinstance(signature_info, dict):
        name = _short(signature_info.get("common_name"))
        issuer = _short(signature_info.get("issuer"))
        evidence.signer = f"{name} ({issuer})" if name and issuer and issuer != name else name
        evidence.signer = evidence.signer or issuer
        evidence.signed_at = _short(signature_info.get("time"))

    source_type, agent = _declared_action(manifest)
    evidence.digital_source_type = source_type
    evidence.generator = agent or claim_generator

    claims = evidence.claims
    if claim_generator:
        claims.append(f"Content credentials written by {claim_generator}.")
    if source_type:
        made_with = f" with {agent}" if agent else ""
        origin = _origin_of(source_type)
        claims.append(f"Declared source: {origin} ({source_type}){made_with}.")
    signed = f"Signed by {evidence.signer or 'an unnamed signer'}"
    claims.append(signed + (f" at {evidence.signed_at}." if evidence.signed_at else "."))
    claims.append(f"Signature: {evidence.signature}.")
    claims.extend(f"Fails validation: {failure}." for failure in evidence.failures)
    claims.extend(f"Not confirmed: {note}." for note in evidence.notes)
    if evidence.matches_image is False:
        claims.append("The manifest no longer matches the image: it was changed after signing.")
    elif evidence.matches_image:
        claims.append("The manifest still matches the image's pixels.")
    return evidence


def _claim_generator(manifest: dict) -> str | None:
    """Name (and version) of the program that wrote the manifest."""
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return _name_and_version(info[0])
    return _short(manifest.get("claim_generator"))


def _name_and_version(agent: Any) -> str | None:
    """'Name 1.2' from a software agent given as a string or a {name, version} map."""
    if isinstance(agent, dict):
        name, version = _short(agent.get("name")), _short(agent.get("version"))
        return f"{name} {version}" if name and version else name
    return _short(agent)


def _declared_action(manifest: dict) -> tuple[str | None, str | None]:
    """The digital source type the manifest's actions declare, and the agent that declared it.

    An AI term wins over any other (a photo edited with generative fill is a composite with
    generative AI even though its first action was a capture).
    """
    declared: list[tuple[str, str | None]] = []
    assertions = manifest.get("assertions")
    for assertion in assertions if isinstance(assertions, list) else ():
        if not isinstance(assertion, dict):
            continue
        label, data = assertion.get("label"), assertion.get("data")
        if not (isinstance(label, str) and label.startswith("c2pa.actions")):
            continue
        actions = data.get("actions") if isinstance(data, dict) else None
        for action in actions if isinstance(actions, list) else ():
            if not isinstance(action, dict):
                continue
            term = _source_type_term(action.get("digitalSourceType"))
            if term:
                declared.append((term, _name_and_version(action.get("softwareAgent"))))
    if not declared:
        return None, None
    for preferred in ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"):
        for term, agent in declared:
            if term == preferred:
                return term, agent
    return declared[0]


def _source_type_term(value: Any) -> str | None:
    """The IPTC term from a digital source type URI ('.../trainedAlgorithmicMedia')."""
    text = _short(value)
    if not text:
        return None
    return text.rstrip("/").rsplit("/", 1)[-1] or None


def _short(value: Any, limit: int = MAX_NAME_CHARS) -> str | None:
    """A stripped, length-capped string, or None for anything that is not a non-empty string."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())[:limit]
    return text or None


# XMP, PNG text chunks and EXIF -----------------------------------------------------------------


def _read_embedded_metadata(data: bytes, trust_anchors: str | None) -> list[_Evidence]:
    """Unsigned claims in XMP, PNG text chunks and EXIF, read through Pillow without decoding."""
    del trust_anchors  # unsigned metadata has no signer to trust
    # Pillow refuses such a chunk at open before the pixels and never reads one after them.
    if png_text_past_limit(data, PngImagePlugin.MAX_TEXT_CHUNK):
        raise _Unreadable
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "WEBP", "TIFF"))
    except Image.UnidentifiedImageError:
        return []  # not a format that carries this metadata; the app checks images itself
    except Exception as error:  # Pillow raises many kinds for damaged chunks and segments
        raise _Unreadable from error
    with image:
        try:
            texts = {key: value for key, value in image.info.items() if isinstance(value, str)}
            xmp = image.info.get("xmp")
            # Pillow's PNG getexif decodes every pixel to look for an eXIf chunk after the image
            # data; generators put settings before it, so only an early eXIf chunk is read.
            skip_exif = image.format == "PNG" and "exif" not in image.info
            exif = Image.Exif() if skip_exif else image.getexif()
            exif_fields = {
                "Software": exif.get(_EXIF_SOFTWARE),
                "ImageDescription": exif.get(_EXIF_IMAGE_DESCRIPTION),
                "UserComment": exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT),
            }
        except Exception as error:
            raise _Unreadable from error
    found = []
    if xmp:
        found.extend(_xmp_evidence(xmp))
    settings = _generator_settings(texts, exif_fields)
    if settings:
        found.append(settings)
    return found


def _xmp_evidence(xmp: bytes | str) -> list[_Evidence]:
    """IPTC digital source type and creator tool from an XMP packet, refusing any DTD."""
    # Imported here: only files with XMP need an XML parser.
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    if len(xmp) > MAX_TEXT_CHARS:
        raise _Unreadable
    if isinstance(xmp, bytes):
        xmp = xmp.rstrip(b"\x00 ")
    try:
        # forbid_dtd refuses DOCTYPE outright, so entity definitions never reach expansion.
        root = fromstring(xmp, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as error:
        raise _Unreadable from error
    source_type = _source_type_term(_xmp_property(root, _DIGITAL_SOURCE_TYPE_TAG))
    creator_tool = _short(_xmp_property(root, _CREATOR_TOOL_TAG))
    remote_manifest = _short(_xmp_property(root, _REMOTE_MANIFEST_TAG))
    evidence = _Evidence()
    if source_type:
        evidence.source = SOURCE_XMP
        evidence.digital_source_type = source_type
        origin = _origin_of(source_type)
        evidence.claims.append(
            f"XMP metadata claims (unsigned) the source is {origin} ({source_type})."
        )
    if creator_tool:
        evidence.claims.append(f"XMP metadata names the creator tool {creator_tool} (unsigned).")
        if source_type or _GENERATOR_NAMES.search(creator_tool):
            evidence.generator = creator_tool
            evidence.source = evidence.source or SOURCE_XMP
    if remote_manifest:
        evidence.claims.append(
            f"XMP metadata points to content credentials stored online at {remote_manifest}; "
            "they were not fetched, so nothing in them was checked."
        )
    return [evidence] if evidence.claims else []


def _xmp_property(root: Any, tag: str) -> str | None:
    """The first value of an XMP property, written as an element or as an attribute."""
    for element in root.iter():
        value = element.text if element.tag == tag else element.get(tag)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _generator_settings(texts: dict[str, str], exif: dict[str, Any]) -> _Evidence | None:
    """Tool, model and prompt from the settings that popular image generators embed."""
    for value in (*texts.values(), *(v for v in exif.values() if isinstance(v, str | bytes))):
        if len(value) > MAX_TEXT_CHARS:
            raise _Unreadable
    found = (
        _comfyui(texts)
        or _invokeai(texts)
        or _novelai(texts)
        or _parameters(texts.get("parameters"))
        or _parameters(_user_comment(exif.get("UserComment")))
        or _parameters(_text(exif.get("ImageDescription")))
    )
    if found is None:
        software = _short(exif.get("Software")) or _short(texts.get("Software"))
        if not (software and _GENERATOR_NAMES.search(software)):
            return None
        found = (software, None, None, {})
    tool, model, prompt, extra = found
    evidence = _Evidence(source=SOURCE_GENERATOR_METADATA)
    evidence.generator = f"{tool} ({model})" if model else tool
    with_model = f" with the model {model}" if model else ""
    evidence.claims.append(
        f"Embedded generation settings claim (unsigned) it was made with {tool}{with_model}."
    )
    if prompt:
        evidence.details.append(("prompt", prompt[:MAX_DETAIL_CHARS]))
    for label, text in extra.items():
        if text:
            evidence.details.append((label, text[:MAX_DETAIL_CHARS]))
    return evidence


_Settings = tuple[str, str | None, str | None, dict[str, str]]


def _load_json(text: str | None) -> Any:
    """Parsed JSON, or None when absent; malformed or absurdly nested JSON is unreadable."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _Unreadable from error


def _comfyui(texts: dict[str, str]) -> _Settings | None:
    """ComfyUI: an API-format 'prompt' graph and/or a UI-format 'workflow' graph, both JSON."""
    # Other tools write a plain-text 'prompt' chunk; only JSON objects are ComfyUI's graphs.
    graph, workflow = (
        _load_json(text) if text and text.lstrip().startswith("{") else None
        for text in (texts.get("prompt"), texts.get("workflow"))
    )
    if not isinstance(graph, dict) and not isinstance(workflow, dict):
        return None
    model = prompt = None
    nodes = graph.values() if isinstance(graph, dict) else ()
    for node in nodes:
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        model = model or _short(inputs.get("ckpt_name")) or _short(inputs.get("unet_name"))
        if "CLIPTextEncode" in str(node.get("class_type")) and isinstance(inputs.get("text"), str):
            prompt = prompt or inputs["text"]
    workflow_nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    for node in workflow_nodes if isinstance(workflow_nodes, list) else ():
        if not isinstance(node, dict) or "Loader" not in str(node.get("type")):
            continue
        values = node.get("widgets_values")
        if isinstance(values, list) and values:
            model = model or _short(values[0])
    return "ComfyUI", model, prompt, {}


def _invokeai(texts: dict[str, str]) -> _Settings | None:
    """InvokeAI: 'invokeai_metadata' JSON (3.x and later) or 'sd-metadata' JSON (2.x)."""
    metadata = _load_json(texts.get("invokeai_metadata"))
    if isinstance(metadata, dict):
        model = metadata.get("model")
        name = (
            _short(model.get("name")) or _short(model.get("model_name"))
            if isinstance(model, dict)
            else _short(model)
        )
        return (
            "InvokeAI",
            name,
            _text(metadata.get("positive_prompt")),
            {"negative prompt": _text(metadata.get("negative_prompt")) or ""},
        )
    legacy = _load_json(texts.get("sd-metadata"))
    if isinstance(legacy, dict):
        image = legacy.get("image") if isinstance(legacy.get("image"), dict) else {}
        prompt = image.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            prompt = prompt[0].get("prompt")
        return "InvokeAI", _short(legacy.get("model_weights")), _text(prompt), {}
    return None


def _novelai(texts: dict[str, str]) -> _Settings | None:
    """NovelAI: Software 'NovelAI', the model in 'Source', settings as JSON in 'Comment'."""
    if _short(texts.get("Software")) != "NovelAI":
        return None
    comment = _load_json(texts.get("Comment"))
    prompt = _text(texts.get("Description"))
    negative = ""
    if isinstance(comment, dict):
        prompt = prompt or _text(comment.get("prompt"))
        negative = _text(comment.get("uc")) or ""
    return "NovelAI", _short(texts.get("Source")), prompt, {"negative prompt": negative}


def _parameters(text: str | None) -> _Settings | None:
    """A 'parameters' text: AUTOMATIC1111/Forge's plain format, or Fooocus/SwarmUI JSON."""
    if not text:
        return None
    if text.lstrip().startswith("{"):
        return _parameters_json(_load_json(text))
    lines = text.strip().split("\n")
    settings_line = lines[-1] if lines[-1].startswith("Steps: ") else None
    if settings_line is None:
        return None
    settings = {
        key.strip(): value.strip('"') for key, value in _A1111_PARAMETER.findall(settings_line)
    }
    body = "\n".join(lines[:-1])
    prompt, _, negative = body.partition("\nNegative prompt:")
    if body.startswith("Negative prompt:"):
        prompt, negative = "", body.removeprefix("Negative prompt:")
    version = _short(settings.get("Version")) or ""
    if re.match(r"f\d", version):
        tool = f"Stable Diffusion WebUI Forge {version}"
    elif version:
        tool = f"Stable Diffusion web UI (AUTOMATIC1111) {version}"
    else:
        tool = "a Stable Diffusion web UI (AUTOMATIC1111 format)"
    extra = {"negative prompt": negative.strip(), "settings": settings_line}
    return tool, _short(settings.get("Model")), prompt.strip(), extra


def _parameters_json(parameters: Any) -> _Settings | None:
    """Fooocus writes its settings as JSON in 'parameters'; SwarmUI nests them under a key."""
    if not isinstance(parameters, dict):
        return None
    swarm = parameters.get("sui_image_params")
    if isinstance(swarm, dict):
        version = _short(swarm.get("swarm_version"))
        tool = f"SwarmUI {version}" if version else "SwarmUI"
        return tool, _short(swarm.get("model")), _text(swarm.get("prompt")), {}
    version = _short(parameters.get("version"))
    if version and version.lower().startswith("fooocus"):
        negative = _text(parameters.get("negative_prompt")) or ""
        return (
            version,
            _short(parameters.get("base_model")),
            _text(parameters.get("prompt")),
            {"negative prompt": negative},
        )
    return None


def _text(value: Any) -> str | None:
    """A string kept whole (for details), or None."""
    return value if isinstance(value, str) and value.strip() else None


def _user_comment(value: Any) -> str | None:
    """EXIF UserComment: an 8-byte character code, then the text (UTF-16 for 'UNICODE')."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes) or len(value) < 8:
        return None
    code, payload = value[:8], value[8:]
    if code.startswith(b"UNICODE"):
        # Writers differ in byte order; text in a Latin script has its zero bytes first in BE.
        big_endian = len(payload) >= 2 and payload[0] == 0 and payload[1] != 0
        return payload.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    return payload.decode("utf-8", errors="replace").strip("\x00")


# Trust anchors --------------------------------------------------------------------------------


def load_trust_anchors(path: str | Path) -> str:
    """Read a PEM file of trust anchor certificates and return them as PEM text for reading.

    Raises PipelineError with a one-line message when the file is missing, too large or holds
    no readable certificate.
    """
    # Imported here: only a run given trust anchors needs certificate parsing.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"trust anchors file not found: {path}")
    if path.stat().st_size > MAX_TRUST_ANCHOR_BYTES:
        raise PipelineError(
            f"trust anchors file {path} is over {MAX_TRUST_ANCHOR_BYTES:,} bytes; "
            "expected a few PEM certificates"
        )
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as error:
        message = f"trust anchors file {path} holds no readable PEM certificate"
        raise PipelineError(message) from error
    return "".join(certificate.public_bytes(Encoding.PEM).decode() for certificate in certificates)
