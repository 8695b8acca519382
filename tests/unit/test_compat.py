"""The compat modules (docs/architecture.md, "Internals we depend on").

Canaries: one test per compat path, failing when the installed library no longer offers the internal the path
reads (its `check()` reports the path switched off): after an upgrade, a failure here names what broke. Then what
a switched-off path does: one line, once, and s2d's fallback (or a one-line refusal where it has none)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pyarrow as pa
import pytest

from s2d.actors import compat_vllm
from s2d.cluster import compat_ray
from s2d.engine.core.compat import Internal, Internals, LibraryIncompatible
from s2d.engine.data import compat_datasets
from s2d.training import compat_deepspeed


@pytest.mark.parametrize("path", sorted(compat_ray.INTERNALS.paths))
def test_canary_ray_still_offers(path):
    assert compat_ray.check(path) == {path: True}, compat_ray.INTERNALS.message(path)


@pytest.mark.parametrize("path", sorted(compat_vllm.INTERNALS.paths))
def test_canary_vllm_still_offers(path):
    assert compat_vllm.check(path) == {path: True}, compat_vllm.INTERNALS.message(path)


@pytest.mark.parametrize("path", sorted(compat_deepspeed.INTERNALS.paths))
def test_canary_deepspeed_still_offers(path):
    assert compat_deepspeed.check(path) == {path: True}  # a required path raises its line instead of False


def test_canary_datasets_save_to_disk_still_lists_its_files(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(compat_datasets, "INTERNALS", compat_datasets.INTERNALS.fresh())
    shards = datasets.Dataset.from_dict({"q": [f"q{i}" for i in range(30)]})
    datasets.DatasetDict({"train": shards}).save_to_disk(str(tmp_path / "ds"), max_shard_size=200)
    assert compat_datasets.check(tmp_path / "ds") == {"state_data_files": True}
    files = compat_datasets.save_to_disk_files(tmp_path / "ds", "train")
    assert len(files) > 1 and all(file.is_file() for file in files)


def test_the_replicas_keep_their_engine_through_a_graceful_exit():
    assert compat_ray.replica_env_vars() == {"RAY_kill_child_processes_on_worker_exit": "0"}


def test_ray_datas_executor_waits_the_shorter_time_inside_the_block_only():
    from ray.data._internal.execution import streaming_executor_state as state

    before = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    with compat_ray.executor_wait(0.02):
        assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.02
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == before


def test_a_missing_internal_is_one_warning_line_once_and_its_path_stays_off(caplog):
    internals = Internals("somelib", ("pytest",), {"gone": Internal("Thing._private", "s2d does X", lambda: 1 / 0)})
    with caplog.at_level(logging.WARNING, logger="s2d.compat"):
        assert internals.check() == {"gone": False}
        assert not internals.enabled("gone")
    assert caplog.messages == [f"s2d: somelib {pytest.__version__} no longer has Thing._private: s2d does X"]


def test_a_path_switched_off_at_run_time_says_so_once(caplog):
    internals = Internals("somelib", ("not-a-distribution",), {"p": Internal("Thing._x", "s2d does Y", lambda: True)})
    assert internals.enabled("p")
    with caplog.at_level(logging.WARNING, logger="s2d.compat"):
        internals.switch_off("p", "AttributeError: _x")
        internals.switch_off("p", "again")
    assert not internals.enabled("p")
    line = "s2d: somelib (not installed) no longer has Thing._x (AttributeError: _x): s2d does Y"
    assert caplog.messages == [line]


def test_a_required_internal_refuses_in_one_line_every_time_it_is_asked():
    internals = Internals("somelib", ("pytest",), {"p": Internal("Thing._y", "use Z", lambda: False, required=True)})
    for _ in range(2):
        with pytest.raises(LibraryIncompatible, match=r"^s2d: somelib \S+ no longer has Thing._y: use Z$"):
            internals.check()


def _arrow_file(path, rows):
    table = pa.table({"q": rows})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_folder_without_the_private_file_list_is_read_in_name_order_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(compat_datasets, "INTERNALS", compat_datasets.INTERNALS.fresh())
    for index in (1, 0):
        _arrow_file(tmp_path / f"data-0000{index}-of-00002.arrow", [f"row{index}"])
    (tmp_path / "state.json").write_text(json.dumps({"_fingerprint": "x"}))
    with caplog.at_level(logging.WARNING, logger="s2d.compat"):
        assert compat_datasets.check(tmp_path) == {"state_data_files": False}
        files = compat_datasets.save_to_disk_files(tmp_path, "train")
    assert [file.name for file in files] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert len(caplog.messages) == 1 and "state.json's _data_files" in caplog.messages[0]
    assert "reads the folder's *.arrow files in name order" in caplog.messages[0]


def test_importing_s2d_and_its_compat_modules_imports_no_library():
    modules = "s2d, s2d.cluster.compat_ray, s2d.actors.compat_vllm, s2d.training.compat_deepspeed, s2d.actors.replica"
    code = f"import sys, {modules}; print(sorted({{'ray', 'vllm', 'deepspeed', 'torch'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_an_engine_s2d_has_shut_down_is_not_shut_down_again_by_its_finalizer():
    shutdowns = []

    class Engine:
        def shutdown(self):
            shutdowns.append(self)

        def __del__(self):
            self.shutdown()

    engine = Engine()
    compat_vllm.forget_shutdown(engine)
    assert isinstance(engine, Engine) and type(engine).__name__ == "Engine"
    del engine
    assert shutdowns == []
    compat_vllm.forget_shutdown(object())  # nothing to forget: left as it is
