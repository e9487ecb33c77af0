"""Media for encrypted rooms (pure functions): inline images become their own parts, URLs become
`file` objects, and an encrypted file round-trips through the bridge's crypto layer."""

from __future__ import annotations

import pytest

from bridge.core.encrypted_media import attach_files, inline_part_id, split_inline_images
from bridge.core.encryption import DecryptionFailed, Encryption
from bridge.network.events import ConvertedPart, MediaUpload
from bridge.network.placeholders import placeholder

UPLOADS = {
    "img0": MediaUpload("img0", b"\x89PNG first", "image/png", "first.png"),
    "img1": MediaUpload("img1", b"\x89PNG second", "image/png", "a<b>.png"),
}


def test_inline_images_leave_the_html_and_follow_as_image_parts() -> None:
    html = (f'<p>Hi<img src="{placeholder("img0")}" alt="logo"> and '
            f'<img alt="" src="{placeholder("img1")}"><img src="https://x.example/p.gif"></p>')
    parts = split_inline_images(
        [("0", ConvertedPart("m.room.message", {"body": "Hi", "formatted_body": html}))], UPLOADS)
    assert [p[0] for p in parts] == ["0", inline_part_id("0", "img0"), inline_part_id("0", "img1")]
    text = parts[0][1].content["formatted_body"]
    assert "mxc://" not in text and "<em>[image: logo]</em>" in text
    assert "<em>[image: a&lt;b&gt;.png]</em>" in text and "https://x.example/p.gif" in text
    image = parts[1][1].content
    assert image["msgtype"] == "m.image" and image["url"] == placeholder("img0")
    assert image["info"] == {"mimetype": "image/png", "size": len(UPLOADS["img0"].data)}


def test_parts_without_inline_images_are_unchanged() -> None:
    parts = [("0", ConvertedPart("m.room.message", {"body": "plain", "formatted_body": "<p>plain</p>"})),
             ("1", ConvertedPart("m.room.message", {"msgtype": "m.file", "url": placeholder("img0")}))]
    assert split_inline_images(parts, UPLOADS) == parts


def test_urls_of_uploads_become_file_objects() -> None:
    file = {"url": "mxc://hs/cipher", "key": {"k": "x"}, "iv": "i", "hashes": {"sha256": "h"}, "v": "v2"}
    content = {"msgtype": "m.image", "url": placeholder("img0"),
               "info": {"thumbnail_url": placeholder("img0"), "mimetype": "image/png"}}
    out = attach_files(content, {"img0": file})
    assert "url" not in out and out["file"] == file
    assert out["info"] == {"thumbnail_file": file, "mimetype": "image/png"}


def test_encrypted_media_round_trips_and_a_tampered_file_is_refused() -> None:
    data = bytes(range(256)) * 3
    ciphertext, file = Encryption.encrypt_media(data)
    assert ciphertext != data and {"key", "iv", "hashes", "v"} <= file.keys()
    assert Encryption.decrypt_media(ciphertext, file) == data
    with pytest.raises(DecryptionFailed):
        Encryption.decrypt_media(ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]), file)
