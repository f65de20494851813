"""`fetch_sam` against a loopback HTTP server (no internet).

The official checkpoints are hundreds of megabytes, so the server hands out the state dict of the
``tiny`` SAM instead, and the `as_vit_b` fixture makes that file pass for ``vit_b``: it replaces
`fetch.build_sam_architecture` (the expected architecture) with the tiny one and sets the expected
MD5 of ``vit_b`` to the served file's. Everything else (names, Range requests, checks) is the real code.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from dessam.errors import DessamError
from dessam.models import fetch
from dessam.models.sam import build_sam, build_sam_architecture

VIT_B_FILE = "sam_vit_b_01ec64.pth"


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_state():
    return build_sam("tiny").state_dict()


@pytest.fixture(scope="module")
def tiny_bytes(tiny_state):
    return _saved(tiny_state)


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.payload` at `/files/<name>`, honouring ``Range: bytes=N-`` unless told not to."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        wanted = self.headers.get("Range")
        if not self.path.startswith("/files/"):
            server.requests.append((self.path, wanted, 404))
            self.send_error(404)
            return
        body, status, extra = server.payload, 200, {}
        if wanted and server.honour_range:
            first = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if first >= len(body):
                server.requests.append((self.path, wanted, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, extra = 206, {"Content-Range": f"bytes {first}-{len(body) - 1}/{len(body)}"}
            body = body[first:]
        server.requests.append((self.path, wanted, status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if server.cut_after is not None:  # promise the whole body, send part of it, hang up
            body, server.cut_after = body[: server.cut_after], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tiny_bytes, monkeypatch):
    monkeypatch.setattr(fetch, "TIMEOUT_S", 5)
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.honour_range, httpd.cut_after, httpd.requests = tiny_bytes, True, None, []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/files"
    httpd.url = f"{httpd.base}/{VIT_B_FILE}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def as_vit_b(monkeypatch, tiny_bytes):
    monkeypatch.setattr(fetch, "build_sam_architecture", lambda name, image_size=None: build_sam_architecture("tiny"))
    monkeypatch.setitem(fetch.SAM_MD5, "vit_b", hashlib.md5(tiny_bytes).hexdigest())


def _served_paths(server):
    return [(path.rsplit("/", 1)[-1], wanted, status) for path, wanted, status in server.requests]


def test_full_download(server, as_vit_b, tmp_path, tiny_bytes, tiny_state):
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert path == tmp_path / VIT_B_FILE
    assert path.read_bytes() == tiny_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [VIT_B_FILE]
    assert _served_paths(server) == [(VIT_B_FILE, None, 200)]
    loaded = build_sam("tiny", path).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in tiny_state.items())


def test_resumes_a_partial_file_with_a_range_request(server, as_vit_b, tmp_path, tiny_bytes):
    half = len(tiny_bytes) // 2
    (tmp_path / (VIT_B_FILE + ".part")).write_bytes(tiny_bytes[:half])
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert _served_paths(server) == [(VIT_B_FILE, f"bytes={half}-", 206)]
    assert path.read_bytes() == tiny_bytes
    assert not (tmp_path / (VIT_B_FILE + ".part")).exists()


def test_a_transfer_cut_short_is_resumed(server, as_vit_b, tmp_path, tiny_bytes):
    server.cut_after = 1000
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert _served_paths(server) == [(VIT_B_FILE, None, 200), (VIT_B_FILE, "bytes=1000-", 206)]
    assert path.read_bytes() == tiny_bytes


def test_a_complete_part_file_is_not_downloaded_again(server, as_vit_b, tmp_path, tiny_bytes):
    (tmp_path / (VIT_B_FILE + ".part")).write_bytes(tiny_bytes)
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert _served_paths(server) == [(VIT_B_FILE, f"bytes={len(tiny_bytes)}-", 416)]
    assert path.read_bytes() == tiny_bytes


def test_server_ignoring_range_makes_it_start_over(server, as_vit_b, tmp_path, tiny_bytes):
    server.honour_range = False
    junk = b"junk that must not stay at the front"
    (tmp_path / (VIT_B_FILE + ".part")).write_bytes(junk)
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert [status for _, _, status in server.requests] == [200]
    assert server.requests[0][1] == f"bytes={len(junk)}-"
    assert path.read_bytes() == tiny_bytes


def _without_a_key(state):
    state = dict(state)
    state.pop("mask_decoder.iou_token.weight")
    return _saved(state)


@pytest.mark.parametrize(
    "make_payload, match_md5, message",
    [
        (lambda good, state: b"not a checkpoint at all" * 50, True, "not a readable PyTorch checkpoint"),
        (lambda good, state: _without_a_key(state), True, "mask_decoder.iou_token.weight"),
        (lambda good, state: good, False, "MD5"),
    ],
    ids=["corrupt", "missing-key", "wrong-md5"],
)
def test_a_file_that_is_not_the_checkpoint_is_refused(
    server, as_vit_b, monkeypatch, tmp_path, tiny_bytes, tiny_state, make_payload, match_md5, message
):
    server.payload = make_payload(tiny_bytes, tiny_state)
    expected_md5 = hashlib.md5(server.payload).hexdigest() if match_md5 else "0" * 32
    monkeypatch.setitem(fetch.SAM_MD5, "vit_b", expected_md5)
    with pytest.raises(DessamError, match=re.escape(message)) as info:
        fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert server.url in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor the .part


def test_an_existing_checkpoint_is_reused(server, as_vit_b, tmp_path, tiny_bytes):
    (tmp_path / VIT_B_FILE).write_bytes(tiny_bytes)
    server.payload = b"the server must not be asked"
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert path == tmp_path / VIT_B_FILE and path.read_bytes() == tiny_bytes
    assert server.requests == []


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_existing_unloadable_file_is_replaced_without_running_it(server, as_vit_b, tmp_path, tiny_bytes):
    marker = tmp_path / "marker"
    torch.save({"weight": _RunsCode(marker)}, tmp_path / VIT_B_FILE)
    path = fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert path.read_bytes() == tiny_bytes
    assert not marker.exists()
    assert _served_paths(server) == [(VIT_B_FILE, None, 200)]


def test_connection_refused_names_the_url_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "TIMEOUT_S", 5)
    with socket.socket() as probe:  # a port that was free a moment ago has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/files/{VIT_B_FILE}"
    with pytest.raises(DessamError) as info:
        fetch.fetch_sam("vit_b", tmp_path, url=url, progress=False)
    message = str(info.value)
    assert url in message and f"download it by hand from {url} into {tmp_path}" in message
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_reported(server, as_vit_b, tmp_path):
    with pytest.raises(DessamError, match="HTTP 404"):
        fetch.fetch_sam("vit_b", tmp_path, url=server.url.replace("/files/", "/nothing/"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_another_download_in_progress_is_refused(server, as_vit_b, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    part = tmp_path / (VIT_B_FILE + ".part")
    with open(part, "ab") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DessamError, match="another process"):
            fetch.fetch_sam("vit_b", tmp_path, url=server.url, progress=False)
    assert server.requests == []


def test_environment_chooses_the_folder_and_the_server(server, as_vit_b, tmp_path, monkeypatch, tiny_bytes):
    home = tmp_path / "home"
    monkeypatch.setenv(fetch.HOME_ENV, str(home))
    monkeypatch.setenv(fetch.URL_BASE_ENV, server.base + "/")
    assert fetch.default_sam_dir() == home
    assert fetch.sam_url("vit_b") == server.url
    path = fetch.fetch_sam("vit_b", progress=False)
    assert path == home / VIT_B_FILE and path.read_bytes() == tiny_bytes


def test_default_dir_without_environment(monkeypatch):
    monkeypatch.delenv(fetch.HOME_ENV, raising=False)
    monkeypatch.delenv(fetch.URL_BASE_ENV, raising=False)
    assert fetch.default_sam_dir().parts[-2:] == (".cache", "dessam")
    assert fetch.sam_url("vit_h") == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"


def test_find_sam_checkpoint_search_order(tmp_path, monkeypatch):
    extra, here, home = (tmp_path / name for name in ("extra", "here", "home"))
    for folder in (extra, here, home):
        folder.mkdir()
    monkeypatch.setenv(fetch.HOME_ENV, str(home))
    monkeypatch.chdir(here)
    assert fetch.find_sam_checkpoint(VIT_B_FILE, [extra]) is None
    (home / VIT_B_FILE).write_bytes(b"h")
    assert fetch.find_sam_checkpoint(VIT_B_FILE, [extra]) == home / VIT_B_FILE
    (here / VIT_B_FILE).write_bytes(b"c")
    assert fetch.find_sam_checkpoint(VIT_B_FILE, [extra]).resolve() == (here / VIT_B_FILE).resolve()
    (extra / VIT_B_FILE).write_bytes(b"e")
    assert fetch.find_sam_checkpoint(VIT_B_FILE, [extra]) == extra / VIT_B_FILE


@pytest.mark.parametrize("variant", ["tiny", "default", "vit_x"])
def test_only_official_variants_can_be_fetched(variant, tmp_path):
    with pytest.raises(DessamError, match="vit_b, vit_l, vit_h"):
        fetch.fetch_sam(variant, tmp_path, url="http://127.0.0.1:9/never", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_official_names_carry_the_md5_prefix():
    for variant, name in fetch.SAM_FILES.items():
        assert name.endswith(fetch.SAM_MD5[variant][:6] + ".pth")
