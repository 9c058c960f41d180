"""The preprocessing job BUILDS for the production runners (Dataflow, Flink, Spark) without a
cluster: options are parsed and validated by Beam, the runner object is created, the whole graph
of ``pipelines.preprocess.build_pipeline`` is constructed and serialised to the portable runner
API proto (what a job server / the Dataflow service receives) and read back. Nothing is run.

The run on ``--direct_num_workers=2 --direct_running_mode=multi_processing`` is covered by
``tests/test_preprocess.py::test_cli_multiprocessing`` (same examples as the in-process run),
not duplicated here.

Dataflow: Beam's own option validation (project id, region, GCS temp/staging paths) runs when
the pipeline is created; ``--project=p --temp_location=gs://b/tmp`` are *rejected* by it (too
short a project id / bucket name), so syntactically valid names are used, and the rejection
is asserted too. Submitting the job (and building the Dataflow job JSON) needs
``apache-beam[gcp]`` (apitools, google-cloud-storage): skipped with the reason when absent.
"""
from __future__ import annotations

import os

import pytest

beam = pytest.importorskip("apache_beam")

from apache_beam.options.pipeline_options import (  # noqa: E402
    FlinkRunnerOptions, GoogleCloudOptions, SparkRunnerOptions, StandardOptions)

from pipelines import preprocess as P  # noqa: E402

DATAFLOW = ["--runner=DataflowRunner", "--project=my-project-123", "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp"]
FLINK = ["--runner=FlinkRunner", "--flink_master=localhost:8081"]
SPARK = ["--runner=SparkRunner"]
#: transforms of build_pipeline that must be in every graph (label prefixes)
EXPECTED = ("Context", "Sum_tokens", "WriteVocab", "Sum_stats", "Write_train", "Write_dead_letter",
            "GatherPieces", "Stats")


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    from pipelines.synthetic import generate

    d = tmp_path_factory.mktemp("beam_runners")
    path = str(d / "log.csv")
    generate(200, 0).to_csv(path, index=False)
    return path


def _build(args, log_csv, out):
    from pipelines.sources import get_source

    opts = P.pipeline_options(args)
    p = beam.Pipeline(options=opts)
    outputs = P.build_pipeline(p, get_source("synthetic", log_csv), P.PreprocessConfig(output_dir=out))
    return p, opts, outputs


def _check_graph(p, opts):
    proto = p.to_runner_api()
    labels = [t.unique_name for t in proto.components.transforms.values()]
    for name in EXPECTED:
        assert any(l == name or l.startswith(name + "/") or l.endswith("/" + name) for l in labels), name
    assert any("TFRecord" in l or "Write" in l for l in labels)
    assert len(proto.root_transform_ids) >= 1
    # the proto is self-contained: it reads back into an equivalent pipeline
    back = beam.Pipeline.from_runner_api(proto, p.runner, opts)
    assert len(back.to_runner_api().components.transforms) == len(proto.components.transforms)
    return labels


@pytest.mark.parametrize("args,runner_cls", [(FLINK, "FlinkRunner"), (SPARK, "SparkRunner")])
def test_portable_runner_builds(args, runner_cls, log_csv, tmp_path):
    p, opts, outputs = _build(args, log_csv, str(tmp_path / "out"))
    assert type(p.runner).__name__ == runner_cls
    assert opts.view_as(StandardOptions).runner == runner_cls
    if runner_cls == "FlinkRunner":
        assert opts.view_as(FlinkRunnerOptions).flink_master == "localhost:8081"
    else:
        assert opts.view_as(SparkRunnerOptions).spark_master_url  # default local[4]
    assert {"train", "valid", "test", "dead_letters", "stats"} <= set(outputs)
    _check_graph(p, opts)
    assert not os.path.exists(str(tmp_path / "out" / "stats.json"))  # built, not run


def test_dataflow_builds_and_validates(log_csv, tmp_path):
    pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")
    # a gs:// output needs the GCS filesystem of apache-beam[gcp] already at construction time
    p, opts, _ = _build(DATAFLOW, log_csv, str(tmp_path / "out"))
    assert type(p.runner).__name__ == "DataflowRunner"
    g = opts.view_as(GoogleCloudOptions)
    assert (g.project, g.region, g.temp_location) == ("my-project-123", "us-central1", "gs://my-bucket/tmp")
    _check_graph(p, opts)


def test_dataflow_option_validation_rejects_bad_names(log_csv):
    pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")
    with pytest.raises(ValueError, match="(?s)GCS bucket.*Project ID"):
        _build(["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/tmp"],
               log_csv, "/tmp/unused")


def test_dataflow_job_submission_needs_gcp_extra(log_csv):
    try:
        import apitools  # noqa: F401
        from google.cloud import storage  # noqa: F401
    except ImportError as e:
        pytest.skip(f"apache-beam[gcp] not installed ({e}); `pip install .[dataflow]` to build the "
                    "Dataflow job request (needs GCP credentials to submit)")
    from apache_beam.runners.dataflow.internal import apiclient

    p, opts, _ = _build(DATAFLOW, log_csv, "gs://my-bucket/out")
    job = apiclient.Job(opts, p.to_runner_api())
    assert job.proto.name
