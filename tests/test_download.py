"""pull_model / pull_models against the local Hub stand-in: exact file sets, resume, stop, errors, offline."""

from __future__ import annotations

import errno
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from fake_hub.server import HubStandIn

from embed_launcher.models.cache import repo_dir, verify_model
from embed_launcher.models.download import DownloadStopped, PullRequest, pull_model, pull_models
from embed_launcher.models.progress import PlainProgress
from embed_launcher.reporting.errors import LauncherError

pytestmark = pytest.mark.integration

PULLABLE = ["BAAI/bge-small-en-v1.5", "BAAI/bge-m3", "sentence-transformers/all-MiniLM-L6-v2",
            "BAAI/bge-reranker-v2-m3", "example/sharded-embedder", "example/legacy-roberta", "example/dense-embedder"]


@pytest.fixture(autouse=True)
def _no_hub_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        yield server


def pull(hub: HubStandIn, cache: Path, repo_id: str, backend: str = "onnx", **kw: object):
    return pull_model(repo_id, cache_dir=cache, backend=backend, endpoint=hub.endpoint, **kw)  # type: ignore[arg-type]


def expected_files(hub: HubStandIn, repo_id: str, backend: str) -> dict[str, int]:
    return hub.repos[repo_id].tei_files(backend)


@pytest.mark.parametrize("backend", ["onnx", "candle"])
@pytest.mark.parametrize("repo_id", PULLABLE)
def test_pull_fetches_exactly_tei_files(hub: HubStandIn, tmp_path: Path, repo_id: str, backend: str) -> None:
    """Bytes served == TEI's file set: every file once, nothing TEI would not load."""
    result = pull(hub, tmp_path, repo_id, backend)
    want = expected_files(hub, repo_id, backend)
    assert hub.downloaded(repo_id) == want
    assert result.downloaded_bytes == result.fileset_bytes == sum(want.values())
    assert not result.from_cache and result.warning is None
    check = verify_model(tmp_path, repo_id, None, backend)
    assert check.complete and check.snapshot_dir == result.snapshot_dir
    assert {str(p.relative_to(result.snapshot_dir)) for p in result.snapshot_dir.rglob("*") if p.is_file()} == set(want)


def test_second_pull_makes_one_listing_call(hub: HubStandIn, tmp_path: Path) -> None:
    """A complete model costs one API call and no file request on the next pull."""
    pull(hub, tmp_path, "BAAI/bge-m3")
    hub.clear_log()
    result = pull(hub, tmp_path, "BAAI/bge-m3")
    assert result.downloaded_bytes == 0 and not result.from_cache
    assert [(a.method, a.path) for a in hub.log] == [("GET", "/api/models/BAAI/bge-m3")]


def test_cache_is_readable_by_huggingface_hub(hub: HubStandIn, tmp_path: Path) -> None:
    """Our blobs/snapshots/refs layout is the one huggingface_hub (and TEI's hf-hub) read."""
    from huggingface_hub import hf_hub_download, scan_cache_dir

    result = pull(hub, tmp_path, "BAAI/bge-small-en-v1.5", "candle")
    hub.clear_log()
    path = hf_hub_download("BAAI/bge-small-en-v1.5", "model.safetensors", cache_dir=tmp_path, local_files_only=True)
    assert Path(path) == result.snapshot_dir / "model.safetensors"
    assert Path(path).read_bytes() == hub.repos["BAAI/bge-small-en-v1.5"].files["model.safetensors"].data
    info = scan_cache_dir(tmp_path)
    assert not info.warnings and [r.repo_id for r in info.repos] == ["BAAI/bge-small-en-v1.5"]
    assert hub.log == []


def test_dropped_connection_resumes_in_the_same_pull(hub: HubStandIn, tmp_path: Path) -> None:
    """A connection cut mid-file is resumed with a Range request from what had arrived."""
    weights = "onnx/model.onnx_data"
    data = hub.repos["BAAI/bge-m3"].files[weights].data
    hub.fail_file("BAAI/bge-m3", weights, at_byte=len(data) // 3)
    result = pull(hub, tmp_path, "BAAI/bge-m3")
    gets = [a for a in hub.log if a.method == "GET" and a.path.endswith(weights)]
    assert [a.range is None for a in gets] == [True, False]
    assert 0 < int((gets[1].range or "").removeprefix("bytes=").rstrip("-")) <= len(data) // 3
    assert gets[1].bytes_sent < len(data) and (result.snapshot_dir / weights).read_bytes() == data


def test_stopped_pull_keeps_partial_file_and_next_pull_resumes(hub: HubStandIn, tmp_path: Path) -> None:
    """should_stop mid-file: DownloadStopped (exit 0), .incomplete kept; the next pull fetches only the rest."""
    weights = "pytorch_model.bin"
    data = hub.repos["BAAI/bge-m3"].files[weights].data
    stop = threading.Event()

    class StopMidWeights(PlainProgress):
        seen = 0

        def advance(self, repo_id: str, n_bytes: int) -> None:
            super().advance(repo_id, n_bytes)
            self.seen += n_bytes
            if self.seen > len(data) // 4:
                stop.set()

    with pytest.raises(DownloadStopped) as caught:
        pull(hub, tmp_path, "BAAI/bge-m3", "candle", progress=StopMidWeights(io.StringIO()), should_stop=stop.is_set)
    assert caught.value.exit_code == 0 and "resumes next time" in caught.value.message
    [partial] = (repo_dir(tmp_path, "BAAI/bge-m3") / "blobs").glob("*.incomplete")
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert not verify_model(tmp_path, "BAAI/bge-m3", None, "candle").complete
    # The hub records the stopped GET when its server thread notices the hang-up, which can come after
    # the pull returned: wait for that record, or it lands in the resumed pull's log.
    wait_until(lambda: any(a.method == "GET" and a.path.endswith(weights) for a in hub.log))
    hub.clear_log()
    result = pull(hub, tmp_path, "BAAI/bge-m3", "candle")
    [get] = [a for a in hub.log if a.method == "GET" and a.path.endswith(weights)]
    assert (get.range, get.bytes_sent) == (f"bytes={kept}-", len(data) - kept)
    assert result.downloaded_bytes == len(data) - kept and not partial.exists()
    assert (result.snapshot_dir / weights).read_bytes() == data
    assert verify_model(tmp_path, "BAAI/bge-m3", None, "candle").complete


def test_stop_interrupts_a_slow_download_promptly(tmp_path: Path) -> None:
    """A stop request during a slow two-model pull returns without finishing it: the partial files stay."""
    with HubStandIn(chunk_delay_s=0.02) as slow:  # ~0.8 MB/s: bge-m3's weights take seconds
        flipped: list[float] = []
        started = threading.Event()

        class Watch(PlainProgress):
            def advance(self, repo_id: str, n_bytes: int) -> None:
                super().advance(repo_id, n_bytes)
                started.set()

        def should_stop() -> bool:
            if started.is_set() and not flipped:
                flipped.append(time.monotonic())
            return bool(flipped)

        requests = [PullRequest("BAAI/bge-m3"), PullRequest("BAAI/bge-reranker-v2-m3", kind="reranker model")]
        with pytest.raises(DownloadStopped):
            pull_models(requests, should_stop=should_stop, cache_dir=tmp_path, backend="candle",
                        endpoint=slow.endpoint, progress=Watch(io.StringIO()))
        # Judged by what is left, not by a stopwatch: a pull that ran on to the end would leave no partial file.
        assert list(tmp_path.glob("models--*/blobs/*.incomplete"))


def test_pull_models_concurrently(hub: HubStandIn, tmp_path: Path) -> None:
    """Both models are pulled (overlapping requests) and returned in request order."""
    out = io.StringIO()
    results = pull_models([PullRequest("BAAI/bge-small-en-v1.5"), PullRequest("BAAI/bge-reranker-v2-m3")],
                          cache_dir=tmp_path, backend="onnx", endpoint=hub.endpoint, progress=PlainProgress(out))
    assert [r.repo_id for r in results] == ["BAAI/bge-small-en-v1.5", "BAAI/bge-reranker-v2-m3"]
    assert all(verify_model(tmp_path, r.repo_id, None, "onnx").complete for r in results)
    lines = out.getvalue().splitlines()
    assert "Downloading BAAI/bge-reranker-v2-m3: 100% (2 MB of 2 MB)" in lines
    assert any(line.startswith("Downloading BAAI/bge-small-en-v1.5: 100%") for line in lines)


def test_pull_models_reports_the_failure(hub: HubStandIn, tmp_path: Path) -> None:
    """One failing model fails the whole pull with its own message."""
    with pytest.raises(LauncherError, match="'example/nope' was not found"):
        pull_models([PullRequest("BAAI/bge-m3"), PullRequest("example/nope", kind="reranker model")],
                    cache_dir=tmp_path, backend="onnx", endpoint=hub.endpoint)


@pytest.mark.parametrize(
    ("repo_id", "kw", "needles"),
    [
        ("example/nope", {}, ["Error: model 'example/nope' was not found on the Hub (http://127.0.0.1:",
                              "embed_manage --listmodels", "If it is private or gated, set EMBED_HF_TOKEN."]),
        ("example/gated-embedder", {}, ["is gated and no token is set (EMBED_HF_TOKEN)", "accept its licence at",
                                        "/example/gated-embedder"]),
        ("example/gated-embedder", {"token": "hf_not_granted"}, ["the token in EMBED_HF_TOKEN has no access"]),
        ("BAAI/bge-m3", {"token": "hf_bogus"}, ["rejected the token in EMBED_HF_TOKEN (401 Unauthorized)"]),
        ("BAAI/bge-m3", {"revision": "v9"}, ["revision 'v9' of model 'BAAI/bge-m3' was not found",
                                             "EMBED_REVISION"]),
        ("example/no-weights", {}, ["TEI cannot serve model 'example/no-weights': it has no weights"]),
    ],
    ids=["not-found", "gated-no-token", "gated-no-access", "bad-token", "no-revision", "no-weights"],
)
def test_hub_failures_are_one_line(hub: HubStandIn, tmp_path: Path, repo_id: str, kw: dict,
                                   needles: list[str]) -> None:
    """Every Hub failure becomes one actionable line, exit 1, no traceback text."""
    with pytest.raises(LauncherError) as caught:
        pull(hub, tmp_path, repo_id, **kw)
    message = caught.value.message
    assert caught.value.exit_code == 1 and "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message


def test_gated_repo_with_granted_token(hub: HubStandIn, tmp_path: Path) -> None:
    """The token reaches the Hub: a granted one downloads the gated model."""
    assert pull(hub, tmp_path, "example/gated-embedder", token="hf_granted").downloaded_bytes > 0


def test_unreachable_hub_without_cache(hub: HubStandIn, tmp_path: Path) -> None:
    """No Hub and no cached model: name the endpoint, the local-only switch and pre-pulling."""
    endpoint = hub.endpoint
    hub.stop()
    with pytest.raises(LauncherError) as caught:
        pull_model("BAAI/bge-m3", cache_dir=tmp_path, backend="onnx", endpoint=endpoint)
    message = caught.value.message
    assert f"cannot reach the Hub at {endpoint}" in message and "\n" not in message
    assert "EMBED_LOCAL_ONLY" in message and "embed_manage --pullmodel BAAI/bge-m3" in message


def test_unreachable_hub_with_complete_cache_succeeds_with_warning(hub: HubStandIn, tmp_path: Path) -> None:
    """A model whose file set is cached counts as pulled when the Hub is down, with a warning."""
    first = pull(hub, tmp_path, "BAAI/bge-m3")
    endpoint = hub.endpoint
    hub.stop()
    result = pull_model("BAAI/bge-m3", cache_dir=tmp_path, backend="onnx", endpoint=endpoint)
    assert result.from_cache and result.snapshot_dir == first.snapshot_dir
    assert result.warning is not None and endpoint in result.warning and "updates" in result.warning


def test_local_only_with_model_makes_no_request(hub: HubStandIn, tmp_path: Path) -> None:
    """Local-only verifies the cache and never touches the network."""
    pull(hub, tmp_path, "BAAI/bge-small-en-v1.5")
    hub.clear_log()
    result = pull(hub, tmp_path, "BAAI/bge-small-en-v1.5", local_only=True)
    assert result.from_cache and result.fileset_bytes == sum(expected_files(hub, "BAAI/bge-small-en-v1.5",
                                                                            "onnx").values())
    assert hub.log == []


@pytest.mark.parametrize("partial", [False, True], ids=["absent", "partial"])
def test_local_only_without_model_names_missing_files_and_fix(hub: HubStandIn, tmp_path: Path,
                                                              partial: bool) -> None:
    """Local-only with an absent or partial model: error with the missing files and the fix; zero requests."""
    if partial:
        pull(hub, tmp_path, "BAAI/bge-m3", "candle")
        (repo_dir(tmp_path, "BAAI/bge-m3") / "snapshots").joinpath(
            next(p.name for p in (repo_dir(tmp_path, "BAAI/bge-m3") / "snapshots").iterdir()),
            "pytorch_model.bin").unlink()
        hub.clear_log()
    with pytest.raises(LauncherError) as caught:
        pull(hub, tmp_path, "BAAI/bge-m3", "candle", local_only=True, kind="reranker model")
    message = caught.value.message
    state = "is not complete" if partial else "is not found"
    assert f"EMBED_LOCAL_ONLY is set but reranker model 'BAAI/bge-m3' {state} in {tmp_path}" in message
    assert ("missing: pytorch_model.bin" if partial else "missing: config.json") in message
    assert message.endswith("Pre-download it first: embed_manage --pullmodel BAAI/bge-m3")
    assert hub.log == []


def test_disk_check_before_downloading(hub: HubStandIn, tmp_path: Path) -> None:
    """Not enough free space: path, needed and free bytes; no weight file requested."""
    with pytest.raises(LauncherError) as caught:
        pull(hub, tmp_path, "BAAI/bge-m3", free_bytes=lambda _path: 1_000_000)
    message = caught.value.message
    assert f"not enough disk space in {tmp_path} for 'BAAI/bge-m3': it needs 2 MB, 1 MB free" in message
    assert not any(a.path.endswith((".onnx", ".onnx_data")) for a in hub.log)


def test_disk_full_mid_download(hub: HubStandIn, tmp_path: Path) -> None:
    """ENOSPC while writing becomes the disk-space message, not a traceback."""

    class DiskFull(PlainProgress):
        def advance(self, repo_id: str, n_bytes: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(LauncherError, match=f"not enough disk space in {tmp_path} for 'BAAI/bge-m3': it ran out"):
        pull(hub, tmp_path, "BAAI/bge-m3", progress=DiskFull(io.StringIO()))


def test_plain_progress_lines_can_go_through_the_console() -> None:
    """EMBED_LOG_FORMAT=json: the download worker hands each progress line to the console (which wraps it)."""
    lines: list[str] = []
    progress = PlainProgress(say=lines.append)
    progress.start("org/model", 2_000_000, 0)
    progress.finish("org/model")
    assert [line.split(":")[0] for line in lines] == ["Downloading org/model"] * 2
    assert lines[0].split(": ")[1].startswith("0%") and lines[1].split(": ")[1].startswith("100%")
