"""`unigen prefetch` against a local server standing in for the hub, then offline validate / submit.

No network: the fake hub is an HTTP server on 127.0.0.1 that serves the endpoints huggingface_hub's
snapshot_download uses for a pinned revision (the tree listing ``/api/models/{id}/tree/{rev}``, and
HEAD / GET ``/{id}/resolve/{rev}/{path}`` with X-Repo-Commit, ETag, Content-Length and byte ranges),
over two repositories made of the tiny world's shipped backbone and decoder folders (hub layouts). The
CLI runs in subprocesses, so HF_ENDPOINT and the offline switches are read fresh, as on a login node.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[3]
ASSETS = REPO / "model" / "assets" / "tiny-shapes"
BACKBONE, DECODER = "tiny-org/shapes-vl", "tiny-org/shapes-sana"


class FakeHub:
    """Repositories as {repo_id: {path: bytes}} at one commit each; records every GET; can fail or lie."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {rid: hashlib.sha1(json.dumps(sorted((p, hashlib.sha256(b).hexdigest()) for p, b in files.items())
                                                     ).encode()).hexdigest() for rid, files in repos.items()}
        self.gets: list[str] = []  # "repo_id/path" of every file GET
        self.fail: dict[str, int] = {}  # "repo_id/path" -> answer 500 this many more times
        self.short: set[str] = set()  # "repo_id/path": GET sends fewer bytes than the listing and HEAD say
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _send(self, h, status: int, data: bytes, headers: dict, body: bool) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _repo(self, parts: list[str]) -> str | None:
        repo_id = "/".join(parts[:2])
        return repo_id if repo_id in self.repos else None

    def answer(self, h, body: bool) -> None:
        url = urlparse(h.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":  # /api/models/{id}/tree/{rev}
            repo_id = self._repo(parts[2:])
            if repo_id is None or parts[5] not in (self.commits[repo_id], "main"):
                return self._send(h, 404, b"{}", {"X-Error-Code": "RevisionNotFound"}, body)
            listing = [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                       for p, b in sorted(self.repos[repo_id].items())]
            return self._send(h, 200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":  # /{org}/{name}/resolve/{rev}/{path}
            repo_id, path = self._repo(parts), "/".join(parts[4:])
            if repo_id is None or parts[3] != self.commits[repo_id] or path not in self.repos[repo_id]:
                return self._send(h, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
            data, key = self.repos[repo_id][path], f"{repo_id}/{path}"
            headers = {"X-Repo-Commit": self.commits[repo_id], "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            if not body:
                h.send_response(200)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.send_header("Content-Length", str(len(data)))
                return h.end_headers()
            with self.lock:
                self.gets.append(key)
                failing = self.fail.get(key, 0) > 0
                if failing:
                    self.fail[key] -= 1
            if failing:
                return self._send(h, 500, b"hub hiccup", {}, body)
            if key in self.short:
                data = data[: len(data) // 2]
            start = int(h.headers["Range"].split("=")[1].split("-")[0]) if h.headers.get("Range") else 0
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(h, 206 if start else 200, data[start:], headers, body)
        return self._send(h, 404, b"", {}, body)


def _folder(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def hub():
    decoder = _folder(ASSETS / "decoder")
    decoder["model_index.json"] = json.dumps({"_class_name": "SanaPipeline"}).encode()
    # Sana's repository also holds a text encoder unigen never reads: prefetch must leave it on the hub.
    decoder["text_encoder/model.safetensors"] = b"\0" * 4096
    fake = FakeHub({BACKBONE: _folder(ASSETS / "backbone"), DECODER: decoder})
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def workspace(tmp_path, hub):
    """A SLURM profile that runs offline from tmp_path/hf-home, and the overrides pointing the smoke recipe
    at the fake hub's repositories at their pinned commits."""
    profile = tmp_path / "offline.yaml"
    text = (REPO / "tests" / "profiles" / "slurm-test.yaml").read_text()
    text = text.replace("name: slurm-test", "name: offline").replace("run_root: ./unigen-runs",
                                                                     f"run_root: {tmp_path / 'runs'}")
    text = text.replace('  HF_HUB_OFFLINE: "1"\n', f'  HF_HUB_OFFLINE: "1"\n  HF_HOME: {tmp_path / "hf-home"}\n')
    profile.write_text(text)
    overrides = [f"model.backbone_source={BACKBONE}", f"model.backbone_revision={hub.commits[BACKBONE]}",
                 f"model.decoder_source={DECODER}", f"model.decoder_revision={hub.commits[DECODER]}"]
    inputs = [str(REPO / "recipes" / "smoke-pretrain.yaml"), *overrides, "--profile", str(profile)]
    return tmp_path, inputs


def unigen(*args: str, hub: FakeHub, online: bool, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
                                                            "HF_HUB_CACHE", "XDG_CACHE_HOME")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="5", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if not online:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(tmp_path: Path, repo_id: str, commit: str) -> Path:
    return tmp_path / "hf-home" / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


def test_prefetch_fills_the_profile_cache_and_offline_validate_and_submit_then_pass(workspace, hub):
    tmp_path, inputs = workspace
    done = unigen("prefetch", *inputs, hub=hub, online=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"prefetch into {tmp_path / 'hf-home' / 'hub'}" in out
    for repo_id, files in hub.repos.items():
        folder = snapshot(tmp_path, repo_id, hub.commits[repo_id])
        wanted = {p for p in files if not p.startswith("text_encoder/")}
        assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == wanted
        for path in wanted:
            assert (folder / path).read_bytes() == files[path], path
            assert f"fetched  {path}  " in out
    assert not any(g.startswith(f"{DECODER}/text_encoder/") for g in hub.gets)
    total = sum(len(b) for rid, files in hub.repos.items() for p, b in files.items() if not p.startswith("text_"))
    fetched = len(hub.gets)
    assert f"2 repositories, {fetched} file(s) fetched ({total / 1e6:.2f} MB), 0 already cached" in out

    again = unigen("prefetch", *inputs, hub=hub, online=True)
    assert again.returncode == 0, again.stderr
    assert len(hub.gets) == fetched, "a second prefetch downloaded again"
    assert f"0 file(s) fetched (0 B), {fetched} already cached" in again.stdout

    # The check needs no network at all: the fake hub is gone.
    hub.server.shutdown()
    check = unigen("validate", *inputs, "--quiet", hub=hub, online=False)
    assert check.returncode == 0, check.stderr
    assert "ok: 1 recipe(s) and profile offline valid" in check.stdout
    dry = unigen("submit", *inputs, "--dry-run", hub=hub, online=False)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was submitted" in dry.stdout


def test_offline_validate_and_submit_with_an_empty_cache_name_each_missing_id_and_the_fix(workspace, hub):
    tmp_path, inputs = workspace
    (tmp_path / "hf-home" / "hub").mkdir(parents=True)
    for command in (["validate", *inputs, "--quiet"], ["submit", *inputs, "--dry-run"], ["submit", *inputs]):
        result = unigen(*command, hub=hub, online=False)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        err = result.stderr
        assert "profile offline runs offline (env HF_HUB_OFFLINE) and 2 pretrained part(s) are not ready" in err
        for repo_id in (BACKBONE, DECODER):
            assert f"{repo_id}@{hub.commits[repo_id]} (" in err and "not in the cache" in err
        assert "with: unigen prefetch " + str(REPO / "recipes" / "smoke-pretrain.yaml") in err
        assert f"--profile {tmp_path / 'offline.yaml'}" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run was created"
    assert hub.gets == []


def test_an_interrupted_prefetch_resumes_and_a_damaged_cache_is_named(workspace, hub):
    tmp_path, inputs = workspace
    weights = f"{BACKBONE}/model.safetensors"
    hub.fail[weights] = 1
    cut = unigen("prefetch", *inputs, hub=hub, online=True)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert f"error: {BACKBONE}@{hub.commits[BACKBONE]}: " in cut.stderr
    assert "rerun the same command" in cut.stderr
    folder = snapshot(tmp_path, BACKBONE, hub.commits[BACKBONE])
    kept = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "model.safetensors" not in kept

    # Offline, the half-fetched backbone is named incomplete and the decoder not in the cache at all.
    check = unigen("validate", *inputs, "--quiet", hub=hub, online=False)
    assert check.returncode == 2
    assert f"{BACKBONE}@{hub.commits[BACKBONE]} (backbone, tokenizer of " in check.stderr
    assert "incomplete: " in check.stderr and "model.safetensors" in check.stderr

    first = len(hub.gets)
    resumed = unigen("prefetch", *inputs, hub=hub, online=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = hub.gets[first:]
    assert weights in again
    assert not {f"{BACKBONE}/{p}" for p in kept} & set(again), "finished files were fetched again"
    assert (folder / "model.safetensors").read_bytes() == hub.repos[BACKBONE]["model.safetensors"]
    assert unigen("validate", *inputs, "--quiet", hub=hub, online=False).returncode == 0

    # A blob cut short on disk afterwards (a full filesystem, a bad copy) is caught by size.
    blob = (folder / "tokenizer.json").resolve()
    blob.write_bytes(blob.read_bytes()[:100])
    damaged = unigen("validate", *inputs, "--quiet", hub=hub, online=False)
    assert damaged.returncode == 2
    assert "1 file(s) of the wrong size (tokenizer.json: 100 bytes, the hub lists" in damaged.stderr


def test_prefetch_refuses_a_download_of_the_wrong_size(workspace, hub):
    tmp_path, inputs = workspace
    hub.short.add(f"{DECODER}/vae/diffusion_pytorch_model.safetensors")
    result = unigen("prefetch", *inputs, hub=hub, online=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {DECODER}@{hub.commits[DECODER]}: " in result.stderr
    assert "Consistency check failed: file should be of size" in result.stderr  # huggingface_hub's size check
    folder = snapshot(tmp_path, DECODER, hub.commits[DECODER])
    assert not (folder / "vae" / "diffusion_pytorch_model.safetensors").exists()


def test_prefetch_in_an_offline_shell_says_how_to_run_it(workspace, hub):
    _, inputs = workspace
    result = unigen("prefetch", *inputs, hub=hub, online=False)
    assert result.returncode == 2
    assert "HF_HUB_OFFLINE set in this shell" in result.stderr and "env -u HF_HUB_OFFLINE unigen prefetch" in result.stderr
    assert hub.gets == []


def test_the_components_load_the_prefetched_revision_offline(workspace, hub):
    """components.py passes the pinned revisions: with only the prefetched snapshot (no refs/main) and
    HF_HUB_OFFLINE, the backbone, DiT and DC-AE load from the cache through the fake hub ids."""
    tmp_path, inputs = workspace
    assert unigen("prefetch", *inputs, hub=hub, online=True).returncode == 0
    hub.server.shutdown()
    code = f"""
from unigen.model.config import get_preset
from unigen.model.components import build_backbone, build_dit, build_vae
config = get_preset("tiny-shapes", backbone_source="{BACKBONE}", backbone_revision="{hub.commits[BACKBONE]}",
                    decoder_source="{DECODER}", decoder_revision="{hub.commits[DECODER]}")
backbone, dit, vae = build_backbone(config), build_dit(config), build_vae(config)
from unigen.model.processor import UniGenProcessor
processor = UniGenProcessor.from_config(config)  # tokenizer + image processor from the same pinned snapshot
print("loaded", sum(p.numel() for m in (backbone, dit, vae) for p in m.parameters()), len(processor.tokenizer))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "XDG_CACHE_HOME")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf-home" / "hub"), HF_ENDPOINT=hub.url)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded" in result.stdout


def test_the_real_presets_name_pinned_hub_ids_and_the_tiny_ones_none():
    from unigen.model.config import get_preset
    from unigen.orchestrator.weights_cache import DECODER_PATTERNS, hub_weights, merge, prefetch_command

    for preset in ("unigen-3b", "unigen-7b"):
        found = hub_weights(get_preset(preset).to_dict(), "recipes/pretrain.yaml")
        assert [(w.parts, w.patterns) for w in found] == [(("backbone", "tokenizer"), None),
                                                          (("decoder",), DECODER_PATTERNS)]
        assert all(len(w.revision) == 40 and int(w.revision, 16) >= 0 for w in found), found
    for preset in ("tiny", "tiny-shapes"):  # random, or shipped as assets://
        assert hub_weights(get_preset(preset).to_dict()) == []
    both = merge(w for s in ("a.yaml", "b.yaml") for w in hub_weights(get_preset("unigen-3b").to_dict(), s))
    assert [w.stages for w in both] == [("a.yaml", "b.yaml")] * 2
    assert prefetch_command(["a.yaml", "train.lr=1", "instruct:model.preset=unigen-7b", "profile.env.HF_HOME=/x y",
                             "profile.slurm.time=1"], "p") == \
        "unigen prefetch a.yaml instruct:model.preset=unigen-7b 'profile.env.HF_HOME=/x y' --profile p"
