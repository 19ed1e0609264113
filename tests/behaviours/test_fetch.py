"""`shiftlab data fetch` against a local mirror of the upstream layout."""

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shiftlab.behaviours import fetch_dataset, load_suite
from shiftlab.behaviours._fetch import dataset_registry
from shiftlab.cli import main
from shiftlab.errors import ShiftlabError


@pytest.fixture()
def mirror(tmp_path, shared_data):
    """Serve the study's files laid out as upstream has them; count requests."""
    root = tmp_path / "mirror"
    for item in dataset_registry()["consistency-misalignment"]["files"]:
        target = root / item["remote"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / item["path"], target)
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()


def test_fetch_verifies_checksums_and_resumes(mirror, tmp_path):
    url, _, requests = mirror
    folder = fetch_dataset("consistency-misalignment", tmp_path / "data", base_url=url,
                           progress=False)  # fmt: skip
    files = dataset_registry()["consistency-misalignment"]["files"]
    assert len(requests) == len(files)
    assert "MIT" in (folder / "SOURCE.md").read_text()
    assert (folder / "LICENSE").read_text().startswith("MIT License")
    assert load_suite(folder / "reward_hacking").behaviour == "reward_hacking"
    fetch_dataset("consistency-misalignment", tmp_path / "data", base_url=url, progress=False)
    assert len(requests) == len(files)  # everything present and verified: no downloads


def test_a_corrupted_file_is_refused_and_not_left_behind(mirror, tmp_path):
    url, root, _ = mirror
    eval_file = root / "consistency_em/data/sycophancy/files/eval.jsonl"
    eval_file.write_text(eval_file.read_text().replace("GCD", "gcd", 1))
    with pytest.raises(ShiftlabError, match=r"eval\.jsonl: checksum mismatch"):
        fetch_dataset("consistency-misalignment", tmp_path / "data", base_url=url,
                      progress=False)  # fmt: skip
    target = tmp_path / "data" / "consistency-misalignment" / "sycophancy"
    assert not (target / "eval.jsonl").exists()
    assert not list(target.glob(".tmp-*"))


def test_the_cli_fetches_and_lists(mirror, tmp_path, capsys):
    url, _, _ = mirror
    assert main(["data", "list"]) == 0
    assert "consistency-misalignment" in capsys.readouterr().out
    code = main(["data", "fetch", "consistency-misalignment", "--to", str(tmp_path / "d"),
                 "--base-url", url, "--no-progress"])  # fmt: skip
    assert code == 0 and "consistency-misalignment" in capsys.readouterr().out
    assert main(["data", "fetch", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_fetch_copies_a_local_copy_offline_and_refuses_a_changed_file(shared_data, tmp_path):
    local = tmp_path / "copy" / "consistency-misalignment"
    for item in dataset_registry()["consistency-misalignment"]["files"]:
        (local / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / item["path"], local / item["path"])
    folder = fetch_dataset("consistency-misalignment", tmp_path / "data", source=local.parent,
                           progress=False)  # fmt: skip
    assert load_suite(folder / "sycophancy").behaviour == "sycophancy"
    assert str(local.resolve()) in (folder / "SOURCE.md").read_text()
    rubric = local / "sycophancy" / "rubric.txt"
    rubric.write_text(rubric.read_text() + "changed")
    with pytest.raises(ShiftlabError, match=r"rubric\.txt: checksum mismatch"):
        fetch_dataset("consistency-misalignment", tmp_path / "other", source=local,
                      progress=False)  # fmt: skip
    target = tmp_path / "other" / "consistency-misalignment" / "sycophancy"
    assert not (target / "rubric.txt").exists()
