"""The page, the API and predict.py's `signature` column against the reference C2PA library's own
verdict: on the C2PA project's conformance files (made by its tools, not ours), and on files whose
history holds a broken earlier version, built here."""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import c2pa
import pytest
from provenance_fixtures import (
    encode_as_editor,
    manifest,
    random_pixels,
    sign,
    sign_with_ingredient,
    signature_bytes,
    with_flipped_signature,
)
from test_app_provenance import api_answer, page_for, panel_of

import predict
from realfake.app.webpage import DECLARED_AI_HEADLINE

CONFORMANCE = Path(__file__).resolve().parent / "fixtures" / "c2pa-conformance"
NOT_CHECKED = "valid, signer not checked against a trust list"
EARLIER = "an earlier version in this file's history (earlier.jpg)"

# What the reference library concludes of each file, and the project's `signature` column for it.
EXPECTED = {
    "A.jpg": ("no manifest", ""),
    "C.jpg": ("Valid", NOT_CHECKED),
    "CA.jpg": ("Valid", NOT_CHECKED),
    "C_with_CAWG_data.jpg": (
        "Valid",
        f"{NOT_CHECKED}; identity assertion (cawg.identity): credential not checked against a "
        "trust list (cawg.x509.credential.untrusted)",
    ),
    "E-sig-CA.jpg": (
        "Invalid",
        "invalid: the manifest's signature does not verify (claimSignature.mismatch)",
    ),
    "XCA.jpg": (
        "Invalid",
        "invalid: the image was changed after signing (assertion.dataHash.mismatch)",
    ),
    "cloud.jpg": ("remote manifest", ""),
    "history-intact.jpg": ("Valid", NOT_CHECKED),
    "history-recorded.jpg": (
        "Valid",
        f"{NOT_CHECKED}; {EARLIER} failed validation when it was added, as the signer recorded "
        "(claimSignature.mismatch)",
    ),
    "history-damaged.jpg": (
        "Invalid",
        f"invalid: {EARLIER} has invalid credentials "
        "(ingredient.manifest.mismatch, claimSignature.mismatch)",
    ),
}


@dataclass(frozen=True)
class Reference:
    """The reference library's verdict on one file: `state` is its validation_state (or "no
    manifest", "remote manifest"); `failures` are the failure codes of the active manifest and of
    the earlier versions it checks now; `recorded` those its signer recorded for an earlier
    version when adding it."""

    state: str
    failures: tuple[str, ...] = ()
    recorded: tuple[str, ...] = ()


def failure_codes(results: dict | None) -> list[str]:
    """Failure codes of a validation results map: the active manifest's, then its ingredients'."""
    results = results or {}
    codes = [entry["code"] for entry in results.get("activeManifest", {}).get("failure", [])]
    for delta in results.get("ingredientDeltas", []):
        codes += [entry["code"] for entry in delta["validationDeltas"]["failure"]]
    return codes


def reference(data: bytes) -> Reference:
    """Read the file with the reference library alone, offline, with its default trust settings."""
    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False}})
    try:
        reader = c2pa.Reader.try_create(None, io.BytesIO(data), None, context=context)
    except c2pa.C2paError as error:
        assert str(error).startswith("Remote")
        return Reference("remote manifest")
    if reader is None:
        return Reference("no manifest")
    with reader:
        store = json.loads(reader.json())
        active = store["manifests"][store["active_manifest"]]
        recorded = [
            code
            for ingredient in active.get("ingredients", [])
            for code in failure_codes(ingredient.get("validation_results"))
        ]
        failures = failure_codes(reader.get_validation_results())
        return Reference(reader.get_validation_state(), tuple(failures), tuple(recorded))


@pytest.fixture(scope="module")
def files(signer, tmp_path_factory) -> Path:
    """The conformance files, and three files by an editor that declare a composite with
    generative AI and name an earlier signed version as their parent: intact; built from a copy
    whose signature was already broken (the signer's record says so); and with the earlier
    version's signature broken inside the file after signing."""
    folder = tmp_path_factory.mktemp("conformance")
    for name in EXPECTED:
        if (CONFORMANCE / name).is_file():
            (folder / name).write_bytes((CONFORMANCE / name).read_bytes())
    earlier_definition = manifest("trainedAlgorithmicMedia", "Example Image Service", "Example")
    earlier = sign(
        encode_as_editor(random_pixels(3), "JPEG"), "image/jpeg", earlier_definition, signer
    )
    later = manifest("compositeWithTrainedAlgorithmicMedia", tool="Example Photo Editor")
    image = encode_as_editor(random_pixels(4), "JPEG")
    intact = sign_with_ingredient(image, later, signer, earlier, "earlier.jpg")
    recorded = sign_with_ingredient(
        image, later, signer, with_flipped_signature(earlier), "earlier.jpg"
    )
    (folder / "history-intact.jpg").write_bytes(intact)
    (folder / "history-recorded.jpg").write_bytes(recorded)
    damaged = with_flipped_signature(intact, signature_bytes(earlier))
    (folder / "history-damaged.jpg").write_bytes(damaged)
    return folder


@pytest.fixture(scope="module")
def signature_column(files, saved_model, tmp_path_factory) -> dict[str, str]:
    """predict.py's `signature` column for every file, from one run over the folder."""
    output = tmp_path_factory.mktemp("rows") / "rows.csv"
    assert (
        predict.main([str(files), "--model", str(saved_model), "--output", str(output), "--quiet"])
        == 0
    )
    with open(output, newline="", encoding="utf-8") as handle:
        return {Path(row["path"]).name: row["signature"] for row in csv.DictReader(handle)}


def test_every_conformance_file_is_in_the_fixtures():
    # Copied with their licences, so the comparison below always runs.
    names = {path.name for path in CONFORMANCE.iterdir()}
    assert {name for name in EXPECTED if not name.startswith("history-")} <= names
    assert {"LICENSE-MIT", "LICENSE-APACHE"} <= names


@pytest.mark.parametrize("name", EXPECTED)
def test_page_api_and_column_agree_with_the_reference_library(
    client, files, signature_column, name
):
    data = (files / name).read_bytes()
    library = reference(data)
    state, column = EXPECTED[name]
    assert library.state == state  # what the reference library concludes, measured here

    page = page_for(client, data, name)
    panel = panel_of(page)
    provenance = api_answer(client, data, name)["provenance"]
    api_text = json.dumps(provenance)
    assert signature_column[name] == column
    assert provenance["credentials"] == (column or None)

    if state == "Valid":
        # A file the library calls valid is called invalid nowhere.
        assert "invalid" not in panel.lower() and "invalid" not in api_text.lower()
        assert column.startswith("valid") and provenance["failures"] == []
    elif state == "Invalid":
        # A file the library calls invalid says so, and says what fails where, everywhere.
        assert column.startswith("invalid: ") and provenance["failures"]
        assert DECLARED_AI_HEADLINE not in page
        assert provenance["declares_ai_with_valid_credentials"] is False
        for failure in provenance["failures"]:
            assert f"Fails validation {failure}" in panel
    else:
        assert provenance["source"] is None and provenance["signature"] is None
        assert "Signature" not in panel
        if state == "remote manifest":
            assert "not fetched, so nothing in them was checked" in panel

    # No failure the library reports is dropped: each code is shown, except the signer's own
    # trust, which is not judged without a trust list (unless the signature itself is broken).
    for code in library.failures + library.recorded:
        if code == "signingCredential.untrusted":
            assert provenance["signature"] in (NOT_CHECKED, "invalid")
            assert f"Signature {provenance['signature']}" in panel
        else:
            assert code in panel and code in column and code in api_text


def test_a_broken_earlier_version_removes_the_declared_headline(client, files):
    pages = {
        name: page_for(client, (files / name).read_bytes(), name)
        for name in ("history-intact.jpg", "history-recorded.jpg", "history-damaged.jpg")
    }
    # The same declaration by the same signer: only the earlier version differs.
    declared = "declare the origin is composite with generative AI"
    assert all(declared in panel_of(page) for page in pages.values())
    assert DECLARED_AI_HEADLINE in pages["history-intact.jpg"]
    # Broken inside the file after it was signed: the library calls the file invalid, and the
    # page does not headline what it declares.
    damaged = panel_of(pages["history-damaged.jpg"])
    assert DECLARED_AI_HEADLINE not in pages["history-damaged.jpg"]
    assert f"Fails validation {EARLIER} has invalid credentials" in damaged
    assert "but they fail validation" in damaged
    # Already broken when the editor added it, as its record says: the library calls the file
    # valid, the headline stays, and the record is shown beside it.
    assert DECLARED_AI_HEADLINE in pages["history-recorded.jpg"]
    recorded = panel_of(pages["history-recorded.jpg"])
    assert f"Not confirmed {EARLIER} failed validation when it was added" in recorded
