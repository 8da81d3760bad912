"""Every command on an s3:// store whose endpoint has no server answers in one line naming the endpoint and the
fix, not with botocore's EndpointConnectionError traceback. The endpoint is a closed port on loopback."""

import json
import socket

import pytest
from cli_helpers import assert_one_line_error, run_cli


@pytest.fixture
def closed_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: nothing listens there


def _options(endpoint: str) -> list[str]:
    # One attempt instead of botocore's retries with back-off: the same error, in a second instead of twenty.
    return ["--storage-option", "client_kwargs=" + json.dumps({"endpoint_url": endpoint}),
            "--storage-option", "config_kwargs=" + json.dumps({"retries": {"max_attempts": 1}})]


@pytest.mark.parametrize("command", [["store", "info"], ["store", "finalize"]])
def test_store_commands_name_the_unreachable_endpoint(command, closed_endpoint, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    result = run_cli(capsys, *command, "s3://bucket/acts.zarr", *_options(closed_endpoint))
    assert_one_line_error(result, "cannot reach the object store", closed_endpoint, "AWS_ENDPOINT_URL")


def test_verify_names_the_unreachable_endpoint(closed_endpoint, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    result = run_cli(capsys, "store", "verify", "s3://bucket/acts.zarr", "--json", *_options(closed_endpoint))
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    errors = json.loads(result.stdout[result.stdout.index("{"):])["errors"]
    assert len(errors) == 1 and "cannot reach the object store" in errors[0] and closed_endpoint in errors[0]


def test_harvest_and_fit_name_the_unreachable_endpoint(closed_endpoint, tiny_model_dir, kjv_file, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = "s3://bucket/acts.zarr"
    harvest = run_cli(capsys, "harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2",
                      "--tokens", "500", "--ctx", "32", "--store", url, *_options(closed_endpoint))
    assert_one_line_error(harvest, "cannot reach the object store", closed_endpoint)
    fit = run_cli(capsys, "fit", "--store", url, "--out", tmp_path / "runs", *_options(closed_endpoint))
    assert_one_line_error(fit, "cannot reach the object store", closed_endpoint)
