"""Runs logged to MLflow (a real tracking server started here) and W&B (offline mode, read back from its own run
file), and the hub model card's model-index exported and parsed back with huggingface_hub.

Expected values come from the run's run.json and files on disk, never from evalkit's tracking code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from wandb_offline_reader import run_contents

EVALKIT = [sys.executable, "-m", "evalkit"]
ENV = {**os.environ, "EVALKIT_TEST": "1", "GIT_PYTHON_REFRESH": "quiet", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RUN_FILES = ("run.json", "predictions.jsonl", "sample_scores.jsonl", "vqa_test_results.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend store and a local artifact root."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.process = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job-runner processes: tracking only
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        self.stop()
        raise AssertionError("mlflow server did not answer /health within 180 s")

    def stop(self) -> None:
        """Stop the server and every process it started (its own session)."""
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)
        self.process = None


def evalkit(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EVALKIT, *args], capture_output=True, text=True, env=env or ENV, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, mlflow_server) -> Path:
    """A reportable run (the whole shapes VQA split, tiny OPT) made with `evalkit run --log-to mlflow`."""
    results = tmp_path_factory.mktemp("results")
    done = evalkit("run", "shapes-vqa", "--model", "blip2-tiny-opt", "--results", str(results), "--log-to", "mlflow",
                   "-q", env={**ENV, "MLFLOW_TRACKING_URI": mlflow_server.uri, "MLFLOW_EXPERIMENT_NAME": "evalkit-test"})
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p.parent for p in results.rglob("run.json")]
    return run_dir


def client_for(server: MlflowServer):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.uri)


def runs_of(server: MlflowServer, run_dir: Path) -> list:
    client = client_for(server)
    experiment = client.get_experiment_by_name("evalkit-test")
    record = json.loads((run_dir / "run.json").read_text())
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`evalkit.run_id` = '{record['run_id']}'")


def test_run_logs_params_metrics_tags_and_artifacts_to_an_mlflow_server(logged_run, mlflow_server, tmp_path):
    record = json.loads((logged_run / "run.json").read_text())
    (run,) = runs_of(mlflow_server, logged_run)
    assert record["tracking"]["mlflow"]["status"] == "ok" and record["tracking"]["mlflow"]["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["task"] == "shapes-vqa" and params["model"] == "blip2-tiny-opt"
    assert params["protocol_fingerprint"] == record["protocol_fingerprint"]
    assert params["protocol.num_beams"] == str(record["protocol"]["num_beams"])
    assert params["version.transformers"] == record["provenance"]["packages"]["transformers"]
    assert params["weights_sha256"] == record["model"]["weights_sha256"]
    # every metric of run.json, headline and per-answer-type breakdown
    assert {k: v["value"] for k, v in record["metrics"].items()} == {k: metrics[k] for k in record["metrics"]}
    assert {"accuracy/yes/no", "accuracy/number", "accuracy/other"} <= set(metrics)
    # the headline is the mean of the per-sample scores on disk (an independent check of what was logged)
    scores = [json.loads(line)["scores"]["accuracy"] for line in (logged_run / "sample_scores.jsonl").open()]
    assert metrics["accuracy"] == pytest.approx(sum(scores) / len(scores), abs=0.005)
    for name, metric in record["metrics"].items():
        if isinstance(metric.get("std_error"), (int, float)):
            assert metrics[f"{name}/std_error"] == metric["std_error"]
    assert metrics["count/samples"] == record["counts"]["samples"] == 388
    assert tags["evalkit.reportable"] == "true" and tags["evalkit.task"] == "shapes-vqa"
    client = client_for(mlflow_server)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert set(RUN_FILES) | {"samples.json"} <= names, names
    got = Path(client.download_artifacts(run.info.run_id, "predictions.jsonl", str(tmp_path)))
    assert got.read_bytes() == (logged_run / "predictions.jsonl").read_bytes()
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "samples.json", str(tmp_path))).read_text())
    assert len(table["data"]) == 16 and "thumbnail" in table["columns"]
    thumb_col = table["columns"].index("thumbnail")
    assert all(row[thumb_col]["type"] == "image" for row in table["data"])
    # the table holds the worst samples first, as predictions.jsonl and sample_scores.jsonl say
    score_col, id_col = table["columns"].index("score"), table["columns"].index("id")
    worst = sorted(scores)[:16]
    assert sorted(row[score_col] for row in table["data"]) == worst
    preds = {str(json.loads(line)["id"]): json.loads(line) for line in (logged_run / "predictions.jsonl").open()}
    pred_col = table["columns"].index("prediction")
    assert all(preds[row[id_col]]["prediction"] == row[pred_col] for row in table["data"])


def test_logging_the_same_run_again_updates_one_mlflow_run(logged_run, mlflow_server, tmp_path):
    before = runs_of(mlflow_server, logged_run)
    env = {**ENV, "MLFLOW_TRACKING_URI": mlflow_server.uri, "MLFLOW_EXPERIMENT_NAME": "evalkit-test"}
    for _ in range(2):
        done = evalkit("log", str(logged_run), "--to", "mlflow", env=env)
        assert done.returncode == 0, done.stderr
    after = runs_of(mlflow_server, logged_run)
    assert len(before) == len(after) == 1 and before[0].info.run_id == after[0].info.run_id
    client = client_for(mlflow_server)
    table = json.loads(Path(client.download_artifacts(after[0].info.run_id, "samples.json", str(tmp_path))).read_text())
    assert len(table["data"]) == 16  # log_table appends to an existing table; a re-log must not


def test_a_tracker_down_never_fails_the_evaluation_and_log_retries(tmp_path):
    """The server stops while the run generates: the run finishes (exit 0, run.json whole), run.json records the
    failure and one warning line says how to retry; once the server is back, `evalkit log` logs it."""
    server = MlflowServer(tmp_path / "mlflow").start()
    results = tmp_path / "results"
    env = {**ENV, "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "evalkit-test"}
    run = subprocess.Popen([*EVALKIT, "run", "shapes-vqa", "--model", "blip2-tiny-opt", "--results", str(results),
                            "--log-to", "mlflow", "-q", "--batch-size", "4", "--limit", "48"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while not list(results.rglob("predictions.jsonl")) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        server.stop()  # mid-run: generation has started, logging comes at the end
        assert run.poll() is None, "the run ended before the server could be stopped mid-run"
        out, err = run.communicate(timeout=900)
    finally:
        run.kill() if run.poll() is None else None
        server.stop()
    assert run.returncode == 0, err
    (run_dir,) = [p.parent for p in results.rglob("run.json")]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["counts"]["samples"] == 48 and record["metrics"]["accuracy"]["value"] > 0
    assert record["tracking"]["mlflow"]["status"] == "failed" and record["tracking"]["mlflow"]["error"]
    warnings = [line for line in err.splitlines() if "retry with: evalkit log" in line]
    assert len(warnings) == 1 and str(run_dir) in warnings[0], err
    assert not list(run_dir.glob(".*.tmp"))
    server = MlflowServer(tmp_path / "mlflow", server.port).start()
    try:
        done = evalkit("log", str(run_dir), "--to", "mlflow", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads((run_dir / "run.json").read_text())["tracking"]["mlflow"]["status"] == "ok"
        (logged,) = runs_of(server, run_dir)
        assert logged.data.metrics["accuracy"] == record["metrics"]["accuracy"]["value"]
    finally:
        server.stop()


def test_wandb_offline_run_holds_the_run_and_is_one_run_when_logged_twice(logged_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(logged_run, run_dir)
    env = {**ENV, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "evalkit-test",
           "WANDB_SILENT": "true"}
    for _ in range(2):
        done = evalkit("log", str(run_dir), "--to", "wandb", env=env)
        assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    first, second = (run_contents(path) for path in files)
    assert first["run_id"] == second["run_id"]  # one W&B run (`wandb sync` resumes it), not a duplicate
    record = json.loads((run_dir / "run.json").read_text())
    assert record["tracking"]["wandb"] == {**record["tracking"]["wandb"], "status": "ok", "run_id": first["run_id"],
                                           "mode": "offline"}
    assert first["project"] == "evalkit-test"
    assert first["config"]["protocol_fingerprint"] == record["protocol_fingerprint"]
    assert first["config"]["task"] == "shapes-vqa"
    for name, metric in record["metrics"].items():
        assert first["summary"][name] == metric["value"], name
    assert "reportable" in first["tags"] and "task:shapes-vqa" in first["tags"]
    (run_artifact,) = [a for a in first["artifacts"] if a["type"] == "evalkit-run"]
    assert set(RUN_FILES) <= set(run_artifact["files"])
    tables = list(files[0].parent.glob("files/media/table/samples_*.table.json"))
    assert tables and len(json.loads(tables[0].read_text())["data"]) == 16
    # the thumbnails travel in the table's artifact, one PNG per distinct image of the 16 rows
    table = json.loads(tables[0].read_text())
    preds = {str(json.loads(line)["id"]): json.loads(line) for line in (run_dir / "predictions.jsonl").open()}
    distinct = {preds[row[table["columns"].index("id")]]["image"] for row in table["data"]}
    (table_artifact,) = [a for a in first["artifacts"] if a["type"] == "run_table"]
    pngs = [f for f in table_artifact["files"] if f.startswith("media/images/") and f.endswith(".png")]
    assert len(pngs) == len(distinct) > 1


def test_model_index_export_round_trips_through_huggingface_hub(logged_run, tmp_path):
    from huggingface_hub import ModelCard

    card_path = tmp_path / "README.md"
    card_path.write_text("---\nlicense: mit\ntags:\n- blip-2\n---\n\n# My fine-tune\n\nTrained on shapes.\n")
    for _ in range(2):  # exporting again replaces the same results, never duplicates them
        done = evalkit("export", "model-index", str(logged_run), "--out", str(card_path))
        assert done.returncode == 0, done.stderr
    card = ModelCard.load(card_path)
    assert "# My fine-tune\n\nTrained on shapes." in card.text
    assert card.data.license == "mit" and card.data.tags == ["blip-2"]
    record = json.loads((logged_run / "run.json").read_text())
    assert card.data.model_name == record["model"]["name"]
    (result,) = card.data.eval_results
    assert (result.task_type, result.task_name) == ("visual-question-answering", "shapes-vqa")
    assert result.metric_name == record["headline_metric"] == "accuracy"
    assert result.metric_value == record["metrics"]["accuracy"]["value"]
    assert result.dataset_split == record["data"]["split"]
    assert result.dataset_revision == record["journal_header"]["data"]
    assert record["protocol_fingerprint"][:12] in result.metric_config
    assert record["protocol"]["name"] in result.metric_config
    protocol_set = {k: v for k, v in record["protocol"].items() if v is not None}  # unset = the task's default
    assert result.metric_args == {"protocol_fingerprint": record["protocol_fingerprint"], **protocol_set}


def test_model_index_refuses_a_non_reportable_run_unless_allowed(logged_run, tmp_path):
    run_dir = tmp_path / "subset"
    shutil.copytree(logged_run, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    record["reportable"], record["not_reportable_reasons"] = False, ["--limit 12: a subset"]
    (run_dir / "run.json").write_text(json.dumps(record))
    done = evalkit("export", "model-index", str(run_dir))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--allow-non-reportable" in done.stderr and str(run_dir) in done.stderr
    done = evalkit("export", "model-index", str(run_dir), "--allow-non-reportable")
    assert done.returncode == 0, done.stderr
    assert "metadata block was not found" not in done.stderr  # a new card has none: nothing to warn about
    from huggingface_hub import ModelCard

    card = ModelCard(done.stdout)
    (result,) = card.data.eval_results
    assert result.metric_config.endswith("(NOT REPORTABLE: --limit 12: a subset)")
    assert card.text.lstrip().startswith("# blip2-tiny-opt") and "---" not in card.text


def test_unknown_or_missing_tracker_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    done = evalkit("run", "shapes-vqa", "--model", "blip2-tiny-opt", "--results", str(tmp_path), "--log-to", "mlfow")
    assert done.returncode == 2 and "did you mean: mlflow" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.rglob("*.jsonl"))
    from evalkit.core.errors import EvalkitError
    from evalkit.tracking import log_runs

    monkeypatch.setitem(log_runs.TRACKERS, "wandb", "wandb_not_installed_here")
    with pytest.raises(EvalkitError, match=r"pip install 'evalkit\[wandb_not_installed_here\]'"):
        log_runs.check_trackers(["wandb"])


def test_the_cli_does_not_import_a_tracker_until_one_is_used():
    code = "import sys, evalkit.cli.main; print(sorted(m for m in ('mlflow', 'wandb') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
