"""Images with provenance metadata, made at test time: a throwaway certificate authority and
signer, images signed with C2PA manifests, copies edited after signing, and PNG text chunks, EXIF
and XMP as image generators and editors write them."""

import datetime
import io
import zlib
from dataclasses import dataclass

import c2pa
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}

IPTC_TERMS = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SIGNER_NAME = "Test Signer"
SIGNER_ORGANIZATION = "Example Test Org"


@dataclass(frozen=True)
class SigningIdentity:
    """A leaf certificate and key, signed by a throwaway CA, as PEM text."""

    chain_pem: str
    key_pem: str
    ca_pem: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIGNER_ORGANIZATION),
        ]
    )


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_certificate_authority(common_name: str = "Test CA"):
    """An EC P-256 CA certificate and its key (the kind the C2PA library accepts as an anchor)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def make_signer() -> SigningIdentity:
    """A CA and a leaf signed by it, with the extensions a C2PA signing certificate needs."""
    ca_certificate, ca_key = make_certificate_authority()
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(SIGNER_NAME))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningIdentity(_pem(leaf) + _pem(ca_certificate), key_pem, _pem(ca_certificate))


def manifest(
    source_type: str, tool: str, agent: str | None = None, edits: tuple[tuple[str, str], ...] = ()
) -> dict:
    """A manifest whose first action creates the image with the given IPTC digital source type,
    followed by edit actions given as (digital source type, software agent) pairs."""
    action = {"action": "c2pa.created", "digitalSourceType": IPTC_TERMS + source_type}
    if agent:
        action["softwareAgent"] = {"name": agent, "version": "3"}
    actions = [action] + [
        {
            "action": "c2pa.edited",
            "digitalSourceType": IPTC_TERMS + edit_type,
            "softwareAgent": {"name": edit_agent, "version": "1"},
        }
        for edit_type, edit_agent in edits
    ]
    return {
        "claim_generator_info": [{"name": tool, "version": "2.1"}],
        "title": "image",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }


def encode(pixels: np.ndarray, image_format: str, **options) -> bytes:
    """Encode RGB pixels as JPEG or PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def random_pixels(seed: int = 0, side: int = 48) -> np.ndarray:
    """A small random RGB image."""
    return np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)


def encode_as_editor(pixels: np.ndarray, image_format: str) -> bytes:
    """Encode pixels the way the signed fixtures and their edited copies are encoded."""
    return encode(pixels, image_format, **({"quality": 95} if image_format == "JPEG" else {}))


def sign(
    image: bytes,
    mime_type: str,
    definition: dict,
    signer: SigningIdentity,
    check_before_signing: bool = True,
) -> bytes:
    """The image with a C2PA manifest embedded and signed (es256, no timestamp authority);
    `check_before_signing=False` lets a malformed manifest through, as older writers did."""
    info = c2pa.C2paSignerInfo("es256", signer.chain_pem.encode(), signer.key_pem.encode(), None)
    # No thumbnail: it would only make the fixtures larger.
    settings = {
        "builder": {"thumbnail": {"enabled": False}},
        "verify": {"verify_after_sign": check_before_signing},
    }
    context = c2pa.Context.from_dict(settings)
    with c2pa.Signer.from_info(info) as c2pa_signer, c2pa.Builder(definition, context) as builder:
        destination = io.BytesIO()
        builder.sign(c2pa_signer, mime_type, io.BytesIO(image), destination)
    return destination.getvalue()


def sign_with_ingredient(
    image: bytes, definition: dict, signer: SigningIdentity, ingredient: bytes, title: str
) -> bytes:
    """A JPEG signed with `definition`, whose history holds the signed JPEG `ingredient` as its
    parent, added the way an editor adds the file it opened."""
    info = c2pa.C2paSignerInfo("es256", signer.chain_pem.encode(), signer.key_pem.encode(), None)
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with c2pa.Signer.from_info(info) as c2pa_signer, c2pa.Builder(definition, context) as builder:
        parent = {"title": title, "relationship": "parentOf"}
        builder.add_ingredient(parent, "image/jpeg", io.BytesIO(ingredient))
        destination = io.BytesIO()
        builder.sign(c2pa_signer, "image/jpeg", io.BytesIO(image), destination)
    return destination.getvalue()


def signature_bytes(signed: bytes) -> bytes:
    """The COSE signature of the file's active manifest: the 64-byte string (CBOR b"X@") at the
    end of its signature box, the last manifest in the store."""
    start = signed.rindex(b"X@") + 2
    return signed[start : start + 64]


def with_flipped_signature(signed: bytes, signature: bytes | None = None) -> bytes:
    """The file with one byte of a manifest's signature flipped: the active manifest's, or the
    one whose signature bytes are given (an ingredient's, copied into the file's history)."""
    signature = signature or signature_bytes(signed)
    position = signed.index(signature) + 10
    return signed[:position] + bytes([signed[position] ^ 0xFF]) + signed[position + 1 :]


def sign_with_remote_manifest(image: bytes, definition: dict, signer: SigningIdentity, url: str):
    """A JPEG whose manifest is stored at `url`, named in its XMP, and not embedded."""
    info = c2pa.C2paSignerInfo("es256", signer.chain_pem.encode(), signer.key_pem.encode(), None)
    with c2pa.Signer.from_info(info) as c2pa_signer, c2pa.Builder(definition) as builder:
        builder.set_no_embed()
        builder.set_remote_url(url)
        destination = io.BytesIO()
        builder.sign(c2pa_signer, "image/jpeg", io.BytesIO(image), destination)
    return destination.getvalue()


def _manifest_block(signed: bytes, image_format: str) -> tuple[int, bytes]:
    """Offset and bytes of the embedded manifest: JPEG APP11 segments or the PNG caBX chunk."""
    if image_format == "JPEG":
        start = position = signed.index(b"\xff\xeb")
        while signed[position : position + 2] == b"\xff\xeb":
            position += 2 + int.from_bytes(signed[position + 2 : position + 4], "big")
        return start, signed[start:position]
    chunk_type = signed.index(b"caBX")
    length = int.from_bytes(signed[chunk_type - 4 : chunk_type], "big")
    return chunk_type - 4, signed[chunk_type - 4 : chunk_type + 4 + length + 4]


def reencode_keeping_manifest(signed: bytes, pixels: np.ndarray, image_format: str) -> bytes:
    """Encode `pixels` afresh and put the signed file's manifest back where it was, as an editor
    that keeps metadata would."""
    offset, block = _manifest_block(signed, image_format)
    fresh = encode_as_editor(pixels, image_format)
    return fresh[:offset] + block + fresh[offset:]


def png_with_text(pixels: np.ndarray, chunks: dict[str, str], compressed: bool = False) -> bytes:
    """A PNG with the given text chunks (tEXt, or zTXt when compressed)."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=compressed)
    return encode(pixels, "PNG", pnginfo=info)


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None) -> str:
    """An XMP packet as editors write it, with the IPTC digital source type and creator tool."""
    properties = ""
    if source_type:
        properties += f"<Iptc4xmpExt:DigitalSourceType>{IPTC_TERMS}{source_type}"
        properties += "</Iptc4xmpExt:DigitalSourceType>"
    if creator_tool:
        properties += f"<xmp:CreatorTool>{creator_tool}</xmp:CreatorTool>"
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        f"{properties}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )


def with_xmp(pixels: np.ndarray, image_format: str, packet: str) -> bytes:
    """JPEG with XMP in its APP1 segment, or PNG with XMP in an iTXt chunk, as editors write."""
    if image_format == "JPEG":
        return encode(pixels, "JPEG", xmp=packet.encode())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    return encode(pixels, "PNG", pnginfo=info)


def entity_bomb_xmp(levels: int = 10) -> str:
    """The 'billion laughs' XML: each entity ten copies of the one before."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels)
    )
    return f'<?xml version="1.0"?><!DOCTYPE x [{entities}]><x>&lol{levels - 1};</x>'


def entity_amplification_xmp() -> str:
    """An XMP packet of about 1 KB whose creator tool expands to 4,000,000 characters: an
    amplification expat itself allows, as it steps in only past 8 MiB of expanded text."""
    entities = f'<!ENTITY a "{"x" * 1000}"><!ENTITY b "{"&a;" * 100}"><!ENTITY c "{"&b;" * 40}">'
    packet = xmp_packet(creator_tool="&c;")
    return packet.replace("<x:xmpmeta", f"<!DOCTYPE x:xmpmeta [{entities}]><x:xmpmeta", 1)


def xmp_with_entity(source_type: str) -> str:
    """An XMP packet whose digital source type comes from an internal entity in a DOCTYPE."""
    packet = xmp_packet("&term;")
    doctype = f'<!DOCTYPE x:xmpmeta [<!ENTITY term "{source_type}">]>'
    return packet.replace("<x:xmpmeta", doctype + "<x:xmpmeta", 1).replace(IPTC_TERMS, "", 1)


def exif_user_comment(text: str) -> bytes:
    """EXIF with a UserComment in the 'UNICODE' code, as AUTOMATIC1111 writes JPEG settings."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    return exif.tobytes()


def exif_software(name: str) -> bytes:
    """EXIF with only the Software field set."""
    exif = Image.Exif()
    exif[0x0131] = name
    return exif.tobytes()


def with_broken_pixel_data(png: bytes) -> bytes:
    """The PNG with its compressed pixel data replaced by garbage under a valid checksum: its
    chunks read fine, but decoding the pixels fails."""
    chunk_type = png.index(b"IDAT")
    length = int.from_bytes(png[chunk_type - 4 : chunk_type], "big")
    garbage = bytes(range(256)) * (length // 256 + 1)
    body = b"IDAT" + garbage[:length]
    checksum = zlib.crc32(body).to_bytes(4, "big")
    return png[:chunk_type] + body + checksum + png[chunk_type + 4 + length + 4 :]
