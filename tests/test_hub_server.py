"""The local Hub server (tests/hub_server.py) driven by the real clients: huggingface_hub and transformers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import load_file, save_file

from hub_server import OTHER_USER, USER, HubServer, hub_env

REPO = f"{USER}/tiny-repo"


def _write_folder(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("hello from the local hub\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "data.json").write_text('{"a": 1}')
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(4)}
    save_file(tensors, folder / "model.safetensors")  # a real binary file
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_whoami_and_env_are_wired(hub_server: HubServer):
    import huggingface_hub.constants as constants

    assert constants.ENDPOINT == hub_server.url == os.environ["HF_ENDPOINT"]
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    assert HfApi().whoami()["name"] == USER
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        HfApi().whoami(token="hf_not_a_valid_token")


def test_upload_folder_round_trip(hub_server: HubServer, tmp_path: Path):
    api = HfApi()
    url = api.create_repo(REPO, private=True)
    assert url.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO)
    assert conflict.value.response.status_code == 409
    api.create_repo(REPO, exist_ok=True)  # no error

    local = _write_folder(tmp_path / "upload")
    first = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "upload", commit_message="first upload")
    assert re.fullmatch(r"[0-9a-f]{40}", first.oid)

    # Stored server-side byte for byte, binaries included, and sent inline (no LFS / Xet traffic).
    assert hub_server.files(REPO) == {".gitattributes": hub_server.files(REPO)[".gitattributes"], **local}
    assert [c.title for c in hub_server.commits(REPO)] == ["first upload", "initial commit"]
    assert hub_server.repo(REPO).private
    paths = {r.path for r in hub_server.requests}
    assert f"/api/models/{REPO}/preupload/main" in paths and f"/api/models/{REPO}/commit/main" in paths
    assert not any("xet" in p or "lfs" in p or p.endswith(".git/info/lfs/objects/batch") for p in paths)

    assert sorted(api.list_repo_files(REPO)) == sorted([".gitattributes", *local])
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == first.oid and info.private
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == len(local["model.safetensors"])
    top_level = {e.path for e in api.list_repo_tree(REPO)}
    assert top_level == {".gitattributes", "notes.txt", "model.safetensors", "sub"}

    weights_path = hf_hub_download(REPO, "model.safetensors")
    assert Path(weights_path).read_bytes() == local["model.safetensors"]
    assert torch.equal(load_file(weights_path)["w"], torch.arange(12, dtype=torch.float32).reshape(3, 4))
    assert f"/{first.oid}/" in weights_path.replace(os.sep, "/")  # cached under the commit sha
    snapshot = Path(snapshot_download(REPO))
    assert {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == {
        ".gitattributes": hub_server.files(REPO)[".gitattributes"],
        **local,
    }

    # A second commit moves `main`; the first revision still resolves to the old content.
    (tmp_path / "upload" / "notes.txt").write_text("changed\n")
    second = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "upload", commit_message="second")
    assert second.oid != first.oid and api.model_info(REPO).sha == second.oid
    commit_request = [r for r in hub_server.requests if r.path.endswith("/commit/main")][-1]
    assert commit_request.status == 200
    assert Path(hf_hub_download(REPO, "notes.txt")).read_text() == "changed\n"
    assert Path(hf_hub_download(REPO, "notes.txt", revision=first.oid)).read_text() == "hello from the local hub\n"
    assert hub_server.files(REPO, revision=first.oid)["notes.txt"] == local["notes.txt"]
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "notes.txt", revision="no-such-branch")

    api.delete_file("sub/data.json", repo_id=REPO)
    assert "sub/data.json" not in hub_server.files(REPO)


def test_auth_errors_are_clear(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    HfApi().create_repo(REPO)
    _write_folder(tmp_path / "upload")

    # No token at all: 401 with an explicit message.
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as no_token:
        HfApi().upload_folder(repo_id=REPO, folder_path=tmp_path / "upload")
    assert no_token.value.response.status_code == 401
    assert "no token" in str(no_token.value)
    with pytest.raises(HfHubHTTPError) as no_token_create:
        HfApi(token=False).create_repo(f"{USER}/another")
    assert no_token_create.value.response.status_code == 401

    # A valid token, but someone else's namespace: 403.
    hub_server.create_repo(f"{OTHER_USER}/theirs")
    with pytest.raises(HfHubHTTPError) as forbidden:
        HfApi(token=hub_server.token).upload_folder(repo_id=f"{OTHER_USER}/theirs", folder_path=tmp_path / "upload")
    assert forbidden.value.response.status_code == 403
    assert "403 Forbidden" in str(forbidden.value) and OTHER_USER in str(forbidden.value)
    with pytest.raises(HfHubHTTPError) as forbidden_create:
        HfApi(token=hub_server.token).create_repo(f"{OTHER_USER}/new-one")
    assert forbidden_create.value.response.status_code == 403
    assert [c.title for c in hub_server.commits(f"{OTHER_USER}/theirs")] == ["initial commit"]


def test_resolve_headers(hub_server: HubServer):
    from huggingface_hub.utils import get_session

    hub_server.create_repo(f"{USER}/seeded")  # seeding without HTTP
    sha = hub_server.commit(f"{USER}/seeded", {"a.txt": b"abc"})
    url = f"{hub_server.url}/{USER}/seeded/resolve/main/a.txt"
    head = get_session().head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["X-Repo-Commit"] == sha and head.headers["Content-Length"] == "3"
    assert head.headers["ETag"] == '"f2ba8f84ab5c1bce84a7b441cb1959cfc7093b7f"'  # `git hash-object` of b"abc"
    assert not any(name.lower().startswith("x-xet") for name in head.headers)
    assert get_session().get(url).content == b"abc"
    missing = get_session().head(f"{hub_server.url}/{USER}/seeded/resolve/main/nope")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == sha
    assert hub_server.requests[-1].method == "HEAD" and hub_server.requests[-1].status == 404


def test_use_local_hub_restores_everything(tmp_path: Path):
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import transformers.utils.hub as transformers_hub

    from hub_server import use_local_hub

    before = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, hf_api.api.endpoint)
    before_env = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME")}
    with HubServer() as server, pytest.MonkeyPatch.context() as mp:
        use_local_hub(server, mp, tmp_path / "home")
        server_url = server.url
        assert transformers_hub.hf_api().endpoint == server.url == hf_api.api.endpoint
        assert constants.HF_HUB_CACHE == str(tmp_path / "home" / "hub")
    assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE, hf_api.api.endpoint) == before
    assert {k: os.environ.get(k) for k in before_env} == before_env
    assert transformers_hub._hf_api is None or transformers_hub._hf_api.endpoint != server_url


def test_missing_file_and_missing_repo(hub_server: HubServer):
    HfApi().create_repo(REPO)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "does-not-exist.bin")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{USER}/no-such-repo", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(f"{USER}/no-such-repo")
    hub_server.create_repo(f"{OTHER_USER}/secret", private=True)  # private repos look missing to others
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(f"{OTHER_USER}/secret")


def _tiny_gpt2():
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def test_transformers_push_and_load(hub_server: HubServer):
    import transformers

    repo_id = f"{USER}/tiny-gpt2"
    model = _tiny_gpt2()
    model.push_to_hub(repo_id)
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub_server.files(repo_id))

    config = transformers.AutoConfig.from_pretrained(repo_id)
    assert isinstance(config, transformers.GPT2Config) and config.n_embd == 16
    loaded = transformers.GPT2LMHeadModel.from_pretrained(repo_id)
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


@pytest.mark.slow
def test_transformers_load_in_subprocess(hub_server: HubServer, tmp_path: Path):
    repo_id = f"{USER}/tiny-gpt2-subprocess"
    model = _tiny_gpt2()
    model.push_to_hub(repo_id)
    before = len(hub_server.requests)

    out = tmp_path / "state.pt"
    code = (
        "import sys, torch, transformers\n"
        "model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "torch.save(model.state_dict(), sys.argv[2])\n"
    )
    env = {**os.environ, **hub_env(hub_server, home=tmp_path / "subprocess_hf_home")}  # fresh cache: must download
    result = subprocess.run(
        [sys.executable, "-c", code, repo_id, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual = torch.load(out)
    assert all(torch.equal(tensor, actual[name]) for name, tensor in model.state_dict().items())
    downloads = [r for r in hub_server.requests[before:] if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert downloads and downloads[0].headers["authorization"] == f"Bearer {hub_server.token}"
