"""Provenance in the app: the panel beside each verdict, the API's `provenance` object, trust
anchors given at start-up, and hostile metadata that never costs the pixel verdict."""

import html
import random
import re
import zlib

import pytest
from markupsafe import escape
from provenance_fixtures import (
    _manifest_block,
    encode,
    manifest,
    png_with_text,
    reencode_keeping_manifest,
    sign,
    with_xmp,
    xmp_packet,
)
from test_app import model_probability, post_files

import app as app_script
from realfake.app import webapp
from realfake.app.webapp import create_app
from realfake.app.webpage import DECLARED_AI_HEADLINE, VERDICTS
from realfake.core.errors import PipelineError
from realfake.inference.provenance import (
    SIGNATURE_NOT_CHECKED,
    SIGNATURE_TRUSTED,
    UNREADABLE,
    read_provenance,
)

PROMPT = "a red fox in the snow, photorealistic"
A1111_PARAMETERS = (
    f"{PROMPT}\nNegative prompt: blurry, lowres\n"
    "Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Size: 512x512, "
    "Model: sd_xl_base_1.0, Version: v1.10.1"
)


@pytest.fixture(scope="module")
def trusting_client(saved_model, signer, tmp_path_factory):
    """A client of an app given the test CA as trust anchor through REALFAKE_TRUST_ANCHORS."""
    anchors = tmp_path_factory.mktemp("anchors") / "anchors.pem"
    anchors.write_text(signer.ca_pem)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REALFAKE_TRUST_ANCHORS", str(anchors))
        trusting_app = create_app({"MODEL_PATH": str(saved_model)})
    return trusting_app.test_client()


def page_for(client, data: bytes, name: str) -> str:
    response = post_files(client, [(data, name)], url="/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def panel_of(page: str) -> str:
    """The text of the one Provenance panel on a result page, tags and escapes removed."""
    (panel,) = re.findall(r'<section class="provenance".*?</section>', page, re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", panel)).split())


def api_answer(client, data: bytes, name: str) -> dict:
    response = post_files(client, [(data, name)])
    assert response.status_code == 200
    (answer,) = response.get_json()["predictions"]
    return answer


def pixel_verdict(app, data: bytes) -> str:
    """The page's verdict from the model's own probability (the test card has no band)."""
    return VERDICTS["Fake" if model_probability(app, data) >= 0.5 else "Real"]


# --- what the panel and the API say -------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_signed_ai_image_is_headlined_as_declared_with_the_pixel_verdict_below(
    app, client, signed, image_format
):
    data = signed[image_format]
    page = page_for(client, data, f"signed.{image_format.lower()}")
    headline = f'<p class="declared-headline">{DECLARED_AI_HEADLINE}</p>'
    verdict = f'<p class="verdict">{pixel_verdict(app, data)}</p>'
    assert headline in page and verdict in page
    assert page.index(headline) < page.index(verdict)  # the declaration leads, the guess follows
    panel = panel_of(page)
    assert "signed content credentials (C2PA)" in panel
    assert "Signed by Test Signer (Example Test Org)" in panel
    assert f"Signature {SIGNATURE_NOT_CHECKED}" in panel
    assert "Matches the image yes" in panel
    assert "declare the origin is generative AI, made with Example Diffusion 3" in panel

    answer = api_answer(client, data, "signed")
    assert answer["provenance"] == read_provenance(data).to_dict()
    assert answer["provenance"]["declares_ai_with_valid_credentials"] is True
    assert answer["provenance"]["signature"] == SIGNATURE_NOT_CHECKED
    # The classifier's own answer is unchanged by the declaration.
    assert answer["probability_fake"] == pytest.approx(model_probability(app, data), abs=1e-6)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_trust_anchors_make_the_test_signer_trusted(client, trusting_client, signed, image_format):
    data = signed[image_format]
    trusted = panel_of(page_for(trusting_client, data, "signed"))
    assert f"Signature {SIGNATURE_TRUSTED}" in trusted and "signer on your trust list" in trusted
    assert api_answer(trusting_client, data, "signed")["provenance"]["signature"] == (
        SIGNATURE_TRUSTED
    )
    unchecked = panel_of(page_for(client, data, "signed"))
    assert "not checked" in unchecked and "trusted" not in unchecked


def test_copy_edited_after_signing_gets_no_declared_headline(app, client, signed, pixels):
    edited_pixels = pixels.copy()
    edited_pixels[8:24, 8:24] = 255
    data = reencode_keeping_manifest(signed["JPEG"], edited_pixels, "JPEG")
    page = page_for(client, data, "edited.jpg")
    assert DECLARED_AI_HEADLINE not in page
    assert f'<p class="verdict">{pixel_verdict(app, data)}</p>' in page
    panel = panel_of(page)
    assert "no longer matches the image" in panel
    assert "Matches the image no" in panel
    answer = api_answer(client, data, "edited.jpg")
    assert answer["provenance"]["matches_image"] is False
    assert answer["provenance"]["declares_ai_with_valid_credentials"] is False


def test_camera_capture_manifest(client, signer, pixels):
    definition = manifest("digitalCapture", tool="Example Camera Firmware")
    data = sign(encode(pixels, "JPEG"), "image/jpeg", definition, signer)
    page = page_for(client, data, "camera.jpg")
    assert DECLARED_AI_HEADLINE not in page
    panel = panel_of(page)
    assert "Declares camera capture (digitalCapture)" in panel
    assert "Made with Example Camera Firmware 2.1" in panel
    assert api_answer(client, data, "camera.jpg")["provenance"]["declared_origin"] == (
        "camera capture"
    )


def test_generation_settings_are_a_claim_and_the_prompt_stays_inside_details(client, pixels):
    data = png_with_text(pixels, {"parameters": A1111_PARAMETERS})
    page = page_for(client, data, "generated.png")
    assert DECLARED_AI_HEADLINE not in page
    panel = panel_of(page)
    assert "image generator settings (unsigned)" in panel
    assert "Embedded generation settings claim (unsigned) it was made with" in panel
    assert "unsigned, so anyone could have written it" in panel
    assert page.count(PROMPT) == 1
    (details,) = re.findall(r'<details class="provenance-details">.*?</details>', page, re.DOTALL)
    assert PROMPT in details
    answer = api_answer(client, data, "generated.png")
    assert answer["provenance"]["details"]["prompt"] == PROMPT
    assert PROMPT not in answer["provenance"]["summary"]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_xmp_digital_source_type_is_shown_as_an_unsigned_claim(client, pixels, image_format):
    packet = xmp_packet("trainedAlgorithmicMedia", creator_tool="Example Editor 5")
    data = with_xmp(pixels, image_format, packet)
    page = page_for(client, data, "xmp")
    assert DECLARED_AI_HEADLINE not in page  # unsigned: a claim, never the headline
    panel = panel_of(page)
    assert "XMP metadata (unsigned)" in panel
    assert "XMP metadata claims (unsigned) the source is generative AI" in panel
    assert api_answer(client, data, "xmp")["provenance"]["source"] == "xmp"


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_plain_image_says_absence_says_nothing(client, pixels, image_format):
    data = encode(pixels, image_format)
    panel = panel_of(page_for(client, data, "plain"))
    assert "Found no provenance data" in panel
    assert "Most sites strip it, so its absence says nothing" in panel
    provenance = api_answer(client, data, "plain")["provenance"]
    assert provenance["source"] is None and provenance["claims"] == []


def test_text_from_the_file_is_escaped(client, pixels):
    tag = '<img src=x onerror="alert(1)">'
    packet = xmp_packet("trainedAlgorithmicMedia", creator_tool=html.escape(tag))
    script = "<script>alert('prompt')</script>"
    xmp_page = page_for(client, with_xmp(pixels, "JPEG", packet), "xmp.jpg")
    prompt_page = page_for(
        client, png_with_text(pixels, {"parameters": f"{script}\nSteps: 20"}), "a.png"
    )
    assert tag not in xmp_page and str(escape(tag)) in xmp_page
    assert script not in prompt_page and str(escape(script)) in prompt_page


# --- read once, from the bytes as uploaded ------------------------------------------------------


def test_provenance_is_read_once_per_upload_from_the_uploaded_bytes(client, signed, monkeypatch):
    seen = []
    original = webapp.read_provenance

    def recording(data, **options):
        seen.append(data)
        return original(data, **options)

    monkeypatch.setattr(webapp, "read_provenance", recording)
    files = [(signed["JPEG"], "a.jpg"), (signed["PNG"], "b.png")]
    for url in ("/", "/api/predict"):
        seen.clear()
        assert post_files(client, files, url=url).status_code == 200
        assert seen == [data for data, _ in files]


# --- hostile files ------------------------------------------------------------------------------


def truncated_manifest(signed: bytes, image_format: str) -> bytes:
    """The signed file with its manifest cut in half, the container kept well-formed (JPEG
    segment length and PNG chunk checksum rewritten), so the image itself still decodes."""
    offset, block = _manifest_block(signed, image_format)
    if image_format == "JPEG":
        kept = int.from_bytes(block[2:4], "big") // 2
        segment = b"\xff\xeb" + kept.to_bytes(2, "big") + block[4 : 4 + kept - 2]
    else:
        body = block[8 : 8 + int.from_bytes(block[:4], "big") // 2]
        checksum = zlib.crc32(b"caBX" + body).to_bytes(4, "big")
        segment = len(body).to_bytes(4, "big") + b"caBX" + body + checksum
    return signed[:offset] + segment + signed[offset + len(block) :]


def flipped_manifest(signed: bytes, image_format: str, seed: int) -> bytes:
    """The signed file with a few bytes of its manifest flipped; a PNG chunk's checksum is
    rewritten, as a deliberate attacker would, so that Pillow still reads the image."""
    offset, block = _manifest_block(signed, image_format)
    generator = random.Random(seed)
    header = 4 if image_format == "JPEG" else 8
    damaged = bytearray(block)
    for _ in range(generator.randint(1, 4)):
        damaged[header + generator.randrange(len(block) - header - 4)] ^= 0xFF
    if image_format == "PNG":
        damaged[-4:] = zlib.crc32(bytes(damaged[4:-4])).to_bytes(4, "big")
    return signed[:offset] + bytes(damaged) + signed[offset + len(block) :]


def check_hostile(app, client, data: bytes) -> dict:
    """The page and the API for one hostile file: the pixel verdict with the panel, or the usual
    400 for an image that does not decode; never a 500 or a traceback. Returns the provenance."""
    page = post_files(client, [(data, "hostile.jpg")], url="/")
    api = post_files(client, [(data, "hostile.jpg")])
    text = page.get_data(as_text=True)
    assert "Traceback" not in text and "internal error" not in text
    assert page.status_code == api.status_code
    if page.status_code == 400:
        assert "truncated or corrupt" in api.get_json()["error"]
        return {}
    assert page.status_code == 200
    assert f'<p class="verdict">{pixel_verdict(app, data)}</p>' in text
    provenance = api.get_json()["predictions"][0]["provenance"]
    panel = panel_of(text)
    assert provenance["summary"] in panel
    if provenance["error"]:
        assert UNREADABLE in panel
    return provenance


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_truncated_manifest_keeps_the_verdict_and_says_unreadable(
    app, client, signed, image_format
):
    data = truncated_manifest(signed[image_format], image_format)
    provenance = check_hostile(app, client, data)
    assert provenance["error"] == UNREADABLE
    assert provenance["declares_ai_with_valid_credentials"] is False


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_byte_flipped_signed_files_never_cost_the_verdict(app, client, signed, image_format):
    outcomes = set()
    for seed in range(6):
        provenance = check_hostile(
            app, client, flipped_manifest(signed[image_format], image_format, seed)
        )
        assert provenance, "a flip inside the manifest must leave the pixels decodable"
        outcomes.add("unreadable" if provenance["error"] else provenance["signature"])
    # Flips anywhere in the file, the pixels included: some of these images no longer decode.
    generator = random.Random(20261203)
    for _ in range(6):
        data = bytearray(signed[image_format])
        for _ in range(generator.randint(1, 8)):
            data[generator.randrange(len(data))] = generator.randrange(256)
        check_hostile(app, client, bytes(data))
    # The damage reached both the parser (unreadable) and the signature check (invalid); a flip
    # in bytes the signature does not cover may leave the credentials valid.
    assert {"unreadable", "invalid"} <= outcomes


def test_a_failing_reader_still_leaves_the_pixel_verdict(app, client, signed, monkeypatch):
    def broken(data, **options):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(webapp, "read_provenance", broken)
    data = signed["JPEG"]
    page = post_files(client, [(data, "a.jpg")], url="/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert f'<p class="verdict">{pixel_verdict(app, data)}</p>' in text
    assert UNREADABLE in panel_of(text) and "secret" not in text
    assert api_answer(client, data, "a.jpg")["provenance"]["error"] == UNREADABLE


# --- trust anchors at start-up ------------------------------------------------------------------


def test_unusable_trust_anchors_stop_the_start_in_one_line(saved_model, tmp_path, capsys):
    garbage = tmp_path / "anchors.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(PipelineError, match="holds no readable PEM certificate"):
        create_app({"MODEL_PATH": str(saved_model), "TRUST_ANCHORS": str(garbage)})
    for path, message in ((garbage, "no readable PEM"), (tmp_path / "none.pem", "not found")):
        arguments = ["--model", str(saved_model), "--trust-anchors", str(path), "--check"]
        assert app_script.main(arguments) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: trust anchors file")
        assert message in error[0]


def test_check_with_good_trust_anchors(saved_model, signer, tmp_path, capsys):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signer.ca_pem)
    arguments = ["--model", str(saved_model), "--trust-anchors", str(anchors), "--check"]
    assert app_script.main(arguments) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("model answers: ")
