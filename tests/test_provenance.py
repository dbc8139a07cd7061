"""Provenance evidence: content credentials signed at test time, unsigned XMP and generator
settings, and hostile metadata that must come back as one error line, quickly."""

import json
import random
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from provenance_fixtures import (
    SIGNER_NAME,
    SIGNER_ORGANIZATION,
    encode,
    entity_amplification_xmp,
    entity_bomb_xmp,
    exif_software,
    exif_user_comment,
    make_certificate_authority,
    manifest,
    png_with_text,
    reencode_keeping_manifest,
    sign,
    sign_with_remote_manifest,
    with_broken_pixel_data,
    with_flipped_signature,
    with_xmp,
    xmp_packet,
    xmp_with_entity,
)

from realfake.core.errors import PipelineError
from realfake.inference.provenance import (
    CSV_COLUMNS,
    MAX_TEXT_CHARS,
    SIGNATURE_INVALID,
    SIGNATURE_NOT_CHECKED,
    SIGNATURE_NOT_ON_TRUST_LIST,
    SIGNATURE_TRUSTED,
    UNREADABLE,
    load_trust_anchors,
    read_provenance,
)

A1111_PARAMETERS = (
    "a red fox in the snow, photorealistic\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Size: 512x512, "
    'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)
A1111_GENERATOR = "Stable Diffusion web UI (AUTOMATIC1111) v1.10.1 (sd_xl_base_1.0)"


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_signed_ai_image_without_trust_list(signed, image_format):
    provenance = read_provenance(signed[image_format])
    assert provenance.source == "c2pa"
    assert provenance.declared_origin == "generative AI"
    assert provenance.digital_source_type == "trainedAlgorithmicMedia"
    assert provenance.generator == "Example Diffusion 3"
    assert provenance.signer == f"{SIGNER_NAME} ({SIGNER_ORGANIZATION})"
    assert provenance.signature == SIGNATURE_NOT_CHECKED
    assert provenance.matches_image is True
    assert provenance.declares_ai_with_valid_credentials
    assert provenance.error is None
    assert "signer not checked against a trust list" in provenance.summary
    assert "trusted" not in provenance.summary
    assert "Content credentials written by Example Image Service 2.1." in provenance.claims


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_test_ca_as_trust_anchor_makes_the_signer_trusted(signed, signer, image_format):
    provenance = read_provenance(signed[image_format], trust_anchors=signer.ca_pem)
    assert provenance.signature == SIGNATURE_TRUSTED
    assert "signer on your trust list" in provenance.summary
    assert provenance.declares_ai_with_valid_credentials


def test_another_ca_as_trust_anchor_leaves_the_signer_off_the_list(signed):
    other_ca, _ = make_certificate_authority("Some Other CA")
    anchors = other_ca.public_bytes(Encoding.PEM).decode()
    provenance = read_provenance(signed["JPEG"], trust_anchors=anchors)
    assert provenance.signature == SIGNATURE_NOT_ON_TRUST_LIST
    assert "signer not on your trust list" in provenance.summary


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_copy_edited_after_signing_no_longer_matches(signed, pixels, image_format):
    unchanged = reencode_keeping_manifest(signed[image_format], pixels, image_format)
    edited_pixels = pixels.copy()
    edited_pixels[8:24, 8:24] = 255  # paint a white square over the signed pixels
    edited = reencode_keeping_manifest(signed[image_format], edited_pixels, image_format)

    # The same pixels re-encoded with the manifest put back still match: the mismatch below
    # comes from the painted square, not from how the copy was made.
    assert read_provenance(unchanged).matches_image is True
    provenance = read_provenance(edited)
    assert provenance.source == "c2pa"
    assert provenance.matches_image is False
    assert not provenance.declares_ai_with_valid_credentials
    assert "no longer matches the image" in provenance.summary
    assert any("no longer matches the image" in claim for claim in provenance.claims)


def test_broken_signature_is_invalid(signed):
    provenance = read_provenance(with_flipped_signature(signed["JPEG"]))
    assert provenance.signature == SIGNATURE_INVALID
    assert not provenance.declares_ai_with_valid_credentials
    assert "fail validation" in provenance.summary
    failure = "the manifest's signature does not verify (claimSignature.mismatch)"
    assert provenance.failures == (failure,)
    assert f"Fails validation: {failure}." in provenance.claims
    assert provenance.csv_fields()["signature"] == f"invalid: {failure}"


def test_unsigned_xmp_never_fills_in_for_the_signed_manifest(signer, pixels):
    # The manifest declares no source type (its creation action lacks one, which makes it
    # malformed); the XMP beside it claims generative AI. The headline stays the manifest's.
    image = with_xmp(pixels, "JPEG", xmp_packet("trainedAlgorithmicMedia"))
    creation = {"actions": [{"action": "c2pa.created"}]}
    definition = {
        "claim_generator_info": [{"name": "Example Camera App", "version": "1"}],
        "assertions": [{"label": "c2pa.actions", "data": creation}],
    }
    provenance = read_provenance(sign(image, "image/jpeg", definition, signer, False))
    assert provenance.source == "c2pa"
    assert provenance.digital_source_type is None
    assert provenance.declared_origin is None
    assert provenance.generator == "Example Camera App 1"
    assert not provenance.declares_ai_with_valid_credentials
    # The signature itself is intact; the actions assertion is what fails, and it is named.
    assert provenance.signature == SIGNATURE_NOT_CHECKED
    failure = "actions assertion (c2pa.actions.v2) fails validation (assertion.action.malformed)"
    assert provenance.failures == (failure,)
    assert f"Fails validation: {failure}." in provenance.claims
    assert any(claim.startswith("XMP metadata claims (unsigned)") for claim in provenance.claims)


def test_camera_capture_manifest(signer, pixels):
    definition = manifest("digitalCapture", tool="Example Camera Firmware")
    data = sign(encode(pixels, "JPEG"), "image/jpeg", definition, signer)
    provenance = read_provenance(data)
    assert provenance.declared_origin == "camera capture"
    assert provenance.digital_source_type == "digitalCapture"
    assert provenance.generator == "Example Camera Firmware 2.1"
    assert provenance.matches_image is True
    assert not provenance.declares_ai_with_valid_credentials
    assert "the origin is camera capture" in provenance.summary


def test_generative_edit_of_a_photo_declares_a_composite(signer, pixels):
    definition = manifest(
        "digitalCapture",
        tool="Example Photo Editor",
        edits=(("compositeWithTrainedAlgorithmicMedia", "Example Generative Fill"),),
    )
    provenance = read_provenance(sign(encode(pixels, "JPEG"), "image/jpeg", definition, signer))
    assert provenance.declared_origin == "composite with generative AI"
    assert provenance.generator == "Example Generative Fill 1"
    assert provenance.declares_ai_with_valid_credentials


def test_manifest_stored_online_is_named_not_fetched(signer, pixels):
    url = "https://credentials.example/manifest.c2pa"
    definition = manifest("trainedAlgorithmicMedia", tool="Example Image Service")
    data = sign_with_remote_manifest(encode(pixels, "JPEG"), definition, signer, url)
    provenance = read_provenance(data)
    assert provenance.error is None
    assert provenance.source is None
    assert provenance.signature is None
    assert any(url in claim and "not fetched" in claim for claim in provenance.claims)
    assert "declares no origin" in provenance.summary


@pytest.mark.parametrize(
    ("chunks", "generator", "prompt"),
    [
        (
            {"parameters": A1111_PARAMETERS},
            A1111_GENERATOR,
            "a red fox in the snow, photorealistic",
        ),
        (
            {"parameters": A1111_PARAMETERS.replace("v1.10.1", "f2.0.1v1.10.1-previous")},
            "Stable Diffusion WebUI Forge f2.0.1v1.10.1-previous (sd_xl_base_1.0)",
            "a red fox in the snow, photorealistic",
        ),
        (
            {
                "prompt": json.dumps(
                    {
                        "4": {
                            "class_type": "CheckpointLoaderSimple",
                            "inputs": {"ckpt_name": "flux1-dev.safetensors"},
                        },
                        "6": {
                            "class_type": "CLIPTextEncode",
                            "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]},
                        },
                    }
                ),
                "workflow": json.dumps({"nodes": [{"type": "CheckpointLoaderSimple"}]}),
            },
            "ComfyUI (flux1-dev.safetensors)",
            "a lighthouse at dusk",
        ),
        (
            {
                "Software": "NovelAI",
                "Source": "NovelAI Diffusion V4 4F49EC75",
                "Description": "1girl, library",
                "Comment": json.dumps({"prompt": "1girl, library", "steps": 28, "uc": "bad"}),
            },
            "NovelAI (NovelAI Diffusion V4 4F49EC75)",
            "1girl, library",
        ),
        (
            {
                "invokeai_metadata": json.dumps(
                    {
                        "positive_prompt": "an astronaut riding a horse",
                        "model": {"name": "juggernautXL_v9", "base": "sdxl"},
                    }
                )
            },
            "InvokeAI (juggernautXL_v9)",
            "an astronaut riding a horse",
        ),
        (
            {
                "parameters": json.dumps(
                    {
                        "prompt": "a bowl of ramen",
                        "base_model": "juggernautXL_v8Rundiffusion",
                        "version": "Fooocus v2.5.5",
                    }
                ),
                "fooocus_scheme": "fooocus",
            },
            "Fooocus v2.5.5 (juggernautXL_v8Rundiffusion)",
            "a bowl of ramen",
        ),
        (
            {
                "parameters": json.dumps(
                    {
                        "sui_image_params": {
                            "prompt": "a glass teapot",
                            "model": "OfficialStableDiffusion/sd_xl_base_1.0",
                            "swarm_version": "0.9.6.2",
                        },
                        "sui_extra_data": {"date": "2025-05-01"},
                    }
                )
            },
            "SwarmUI 0.9.6.2 (OfficialStableDiffusion/sd_xl_base_1.0)",
            "a glass teapot",
        ),
        (
            {"parameters": json.dumps({"sui_image_params": {"prompt": "a kite", "model": "m"}})},
            "SwarmUI (m)",
            "a kite",
        ),
    ],
    ids=[
        "automatic1111",
        "forge",
        "comfyui",
        "novelai",
        "invokeai",
        "fooocus",
        "swarmui",
        "swarmui-unversioned",
    ],
)
def test_generator_settings_in_png_text(pixels, chunks, generator, prompt):
    provenance = read_provenance(png_with_text(pixels, chunks))
    assert provenance.source == "generator metadata"
    assert provenance.generator == generator
    assert dict(provenance.details)["prompt"] == prompt
    # The prompt is an expandable detail, never part of the headline or the claims.
    assert prompt not in provenance.summary
    assert not any(prompt in claim for claim in provenance.claims)
    assert "unsigned" in provenance.summary
    assert provenance.signature is None
    assert not provenance.declares_ai_with_valid_credentials


@pytest.mark.parametrize(
    ("settings", "negative"),
    [({"negative_prompt": "blurry, watermark"}, "blurry, watermark"), ({}, None)],
    ids=["negative", "none"],
)
def test_fooocus_negative_prompt_is_a_detail_of_its_own(pixels, settings, negative):
    fooocus = {"prompt": "a bowl of ramen", "version": "Fooocus v2.5.5", **settings}
    provenance = read_provenance(png_with_text(pixels, {"parameters": json.dumps(fooocus)}))
    shown = [("negative prompt", negative)] if negative else []
    assert list(provenance.details) == [("prompt", "a bowl of ramen"), *shown]


@pytest.mark.parametrize(
    "settings",
    [{"prompt": "a cat", "version": "SomeTool 1.0"}, {"prompt": "a cat"}],
    ids=["another tool", "no version"],
)
def test_json_parameters_of_an_unknown_tool_are_not_evidence(pixels, settings):
    provenance = read_provenance(png_with_text(pixels, {"parameters": json.dumps(settings)}))
    assert provenance.error is None
    assert provenance.source is None
    assert provenance.generator is None


def test_plain_text_prompt_chunk_is_neither_comfyui_nor_an_error(pixels):
    provenance = read_provenance(png_with_text(pixels, {"prompt": "a cat on a sofa"}))
    assert provenance.error is None
    assert provenance.source is None


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_automatic1111_settings_in_exif(pixels, image_format):
    data = encode(pixels, image_format, exif=exif_user_comment(A1111_PARAMETERS))
    provenance = read_provenance(data)
    assert provenance.generator == A1111_GENERATOR
    assert dict(provenance.details)["negative prompt"] == "blurry, lowres"


def test_reading_never_decodes_the_pixels(pixels):
    # Decoding these pixels fails, so any decode would surface as an error; none must happen,
    # since decoding a large PNG costs tens of milliseconds.
    data = with_broken_pixel_data(png_with_text(pixels, {"parameters": A1111_PARAMETERS}))
    provenance = read_provenance(data)
    assert provenance.error is None
    assert provenance.generator == A1111_GENERATOR


def test_generator_named_in_exif_software(pixels):
    provenance = read_provenance(encode(pixels, "JPEG", exif=exif_software("Midjourney v6")))
    assert provenance.source == "generator metadata"
    assert provenance.generator == "Midjourney v6"


def test_ordinary_editor_in_exif_software_is_not_evidence(pixels):
    provenance = read_provenance(encode(pixels, "JPEG", exif=exif_software("GIMP 2.10.36")))
    assert provenance.source is None


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_xmp_digital_source_type_is_an_unsigned_claim(pixels, image_format):
    packet = xmp_packet("compositeWithTrainedAlgorithmicMedia", creator_tool="Example Editor 5")
    provenance = read_provenance(with_xmp(pixels, image_format, packet))
    assert provenance.source == "xmp"
    assert provenance.declared_origin == "composite with generative AI"
    assert provenance.generator == "Example Editor 5"
    assert provenance.signature is None
    assert not provenance.declares_ai_with_valid_credentials
    assert "unsigned" in provenance.summary
    assert any("claims (unsigned)" in claim for claim in provenance.claims)


def test_xmp_digital_source_type_without_creator_tool(pixels):
    provenance = read_provenance(with_xmp(pixels, "PNG", xmp_packet("digitalCapture")))
    assert provenance.source == "xmp"
    assert provenance.declared_origin == "camera capture"
    assert provenance.generator is None
    assert "the origin is camera capture" in provenance.summary


def test_xmp_creator_tool_alone_is_a_claim_not_evidence(pixels):
    data = with_xmp(pixels, "JPEG", xmp_packet(creator_tool="Adobe Photoshop 25.0"))
    provenance = read_provenance(data)
    assert provenance.source is None
    assert provenance.claims == (
        "XMP metadata names the creator tool Adobe Photoshop 25.0 (unsigned).",
    )


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_plain_image_has_no_evidence(pixels, image_format):
    provenance = read_provenance(encode(pixels, image_format))
    assert provenance.source is None
    assert provenance.error is None
    assert provenance.claims == ()
    assert "absence says nothing" in provenance.summary
    assert provenance.csv_fields() == dict.fromkeys(CSV_COLUMNS, "")


def test_to_dict_and_csv_fields(signed):
    provenance = read_provenance(signed["PNG"])
    as_json = json.loads(json.dumps(provenance.to_dict()))
    assert as_json["source"] == "c2pa"
    assert as_json["declares_ai_with_valid_credentials"] is True
    assert as_json["summary"] == provenance.summary
    assert as_json["claims"] == list(provenance.claims)
    assert provenance.csv_fields() == {
        "provenance_source": "c2pa",
        "declared_origin": "generative AI",
        "generator": "Example Diffusion 3",
        "signature": SIGNATURE_NOT_CHECKED,
    }


# Hostile metadata ------------------------------------------------------------------------------


def timed_read(data: bytes, **options):
    start = time.perf_counter()
    provenance = read_provenance(data, **options)
    return provenance, time.perf_counter() - start


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_xml_entity_bomb_is_refused_fast(pixels, image_format):
    provenance, seconds = timed_read(with_xmp(pixels, image_format, entity_bomb_xmp()))
    assert provenance.error == UNREADABLE
    assert provenance.source is None
    assert seconds < 0.5


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_entity_amplification_that_expat_allows_is_refused(pixels, image_format):
    import xml.etree.ElementTree as standard_library

    packet = entity_amplification_xmp()
    # The standard library's parser expands it all: refusing it is the reader's own doing.
    expanded = max(
        len(element.text or "") for element in standard_library.fromstring(packet).iter()
    )
    assert len(packet) < 2_000 and expanded == 4_000_000
    provenance, seconds = timed_read(with_xmp(pixels, image_format, packet))
    assert provenance.error == UNREADABLE
    assert provenance.claims == () and provenance.generator is None
    assert seconds < 0.5


def test_any_doctype_in_xmp_is_refused(pixels):
    # A harmless entity, but entity expansion is never trusted: the packet is not read at all.
    data = with_xmp(pixels, "JPEG", xmp_with_entity("trainedAlgorithmicMedia"))
    provenance = read_provenance(data)
    assert provenance.error == UNREADABLE
    assert provenance.source is None


@pytest.mark.parametrize("compressed", [False, True], ids=["tEXt", "zTXt"])
def test_huge_text_chunk_is_not_parsed(pixels, compressed):
    huge = '{"a": "' + "x" * (MAX_TEXT_CHARS * 3) + '"}'
    provenance, seconds = timed_read(png_with_text(pixels, {"prompt": huge}, compressed))
    assert provenance.error == UNREADABLE
    assert seconds < 1.0


def test_deeply_nested_json_is_unreadable_not_a_recursion_error(pixels):
    nested = '{"a": ' * 100_000 + "1" + "}" * 100_000
    provenance, seconds = timed_read(png_with_text(pixels, {"prompt": nested}))
    assert provenance.error == UNREADABLE
    assert seconds < 1.0


def test_damaged_metadata_keeps_the_evidence_that_was_readable(signed, pixels):
    # A signed image that also carries a malformed generator chunk: the credentials still show.
    data = reencode_keeping_manifest(signed["PNG"], pixels, "PNG")
    chunk = png_with_text(pixels, {"invokeai_metadata": "{not json"})
    # Insert the malformed tEXt chunk right after IHDR (8-byte signature + 25-byte IHDR).
    text_chunk = chunk[33 : chunk.index(b"IDAT") - 4]
    provenance = read_provenance(data[:33] + text_chunk + data[33:])
    assert provenance.source == "c2pa"
    assert provenance.error == UNREADABLE


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_random_byte_flips_always_return_within_a_bound(signed, image_format):
    original = signed[image_format]
    generator = random.Random(20261203)
    slowest = 0.0
    outcomes = set()
    for _ in range(150):
        data = bytearray(original)
        for _ in range(generator.randint(1, 8)):
            data[generator.randrange(len(data))] = generator.randrange(256)
        provenance, seconds = timed_read(bytes(data))
        slowest = max(slowest, seconds)
        outcomes.add((provenance.signature, provenance.matches_image, provenance.error))
    for length in (len(original) // 4, len(original) // 2, len(original) - 10):
        provenance, seconds = timed_read(original[:length])
        slowest = max(slowest, seconds)
        outcomes.add((provenance.signature, provenance.matches_image, provenance.error))
    assert slowest < 1.0
    # The flips land in pixels, the manifest and the signature alike, so several outcomes show.
    assert len(outcomes) >= 2


def test_oversized_input_is_refused(pixels):
    # A readable PNG with trailing padding: refused for its size alone.
    provenance = read_provenance(encode(pixels, "PNG") + bytes(65 * 1024 * 1024))
    assert provenance.error == UNREADABLE


# Trust anchors ---------------------------------------------------------------------------------


def test_load_trust_anchors_returns_usable_pem(tmp_path, signed, signer):
    path = tmp_path / "anchors.pem"
    path.write_text("my organisation's CA\n" + signer.ca_pem)
    anchors = load_trust_anchors(path)
    assert anchors.startswith("-----BEGIN CERTIFICATE-----")
    assert read_provenance(signed["JPEG"], trust_anchors=anchors).signature == SIGNATURE_TRUSTED


def test_load_trust_anchors_keeps_every_certificate_and_nothing_else(tmp_path, signed, signer):
    other_ca, _ = make_certificate_authority("Some Other CA")
    other = other_ca.public_bytes(Encoding.PEM).decode()
    path = tmp_path / "anchors.pem"
    path.write_text(f"# another organisation's CA\n{other}# ours\n{signer.ca_pem}")
    anchors = load_trust_anchors(path)
    assert anchors == other + signer.ca_pem
    # The signer's CA, second in the file, is an anchor all the same.
    assert read_provenance(signed["JPEG"], trust_anchors=anchors).signature == SIGNATURE_TRUSTED


def test_trust_anchors_file_of_exactly_the_limit_is_read_and_one_byte_more_is_not(tmp_path, signer):
    path = tmp_path / "anchors.pem"
    comment = "x" * (1_000_000 - len(signer.ca_pem) - 1) + "\n"
    path.write_text(comment + signer.ca_pem)
    assert path.stat().st_size == 1_000_000
    assert load_trust_anchors(path) == signer.ca_pem
    path.write_text("x" + comment + signer.ca_pem)
    with pytest.raises(PipelineError) as raised:
        load_trust_anchors(path)
    assert str(raised.value) == (
        f"trust anchors file {path} is over 1,000,000 bytes; expected a few PEM certificates"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "trust anchors file not found"),
        (b"", "holds no readable PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "no readable"),
        (b"x" * 1_000_001, "is over 1,000,000 bytes"),
    ],
    ids=["missing", "empty", "garbage", "too large"],
)
def test_load_trust_anchors_errors(tmp_path, content, message):
    path = tmp_path / "anchors.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as raised:
        load_trust_anchors(path)
    assert "\n" not in str(raised.value)
