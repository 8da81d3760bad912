"""`pipeline store list`: the stores under a local folder and under an S3 prefix (the moto server), each with its
state; a damaged store is a row naming its problem, never a traceback."""

import json

from cli_helpers import assert_one_line_error, run_cli
from direct_store import make_meta, random_rows, write_store

from pipeline.cli.console import console
from store.catalog import list_stores


def _team(url: str, storage_options: dict | None = None, *, growing: bool = True) -> None:
    """Under ``url``: a complete store, an unfinished one a level down, one whose root zarr.json was damaged, and
    (locally) one being extended to more tokens."""
    acts = random_rows(4000, 8)
    write_store(f"{url}/done.zarr", make_meta(n_rows=4000), acts, storage_options=storage_options)
    write_store(f"{url}/people/ann/half.zarr", make_meta(n_rows=4000), acts, stop_row=1300,
                storage_options=storage_options)
    write_store(f"{url}/broken.zarr", make_meta(n_rows=1000), acts[:1000], storage_options=storage_options)
    if growing:
        write_store(f"{url}/more.zarr", make_meta(n_rows=1000), acts[:1000], storage_options=storage_options)
        write_store(f"{url}/more.zarr", make_meta(n_rows=4000), acts, stop_row=1300, storage_options=storage_options)


def _by_name(entries):
    return {e.name: e for e in entries}


def test_a_folders_stores_with_their_states(tmp_path, capsys, monkeypatch):
    _team(str(tmp_path))
    (tmp_path / "broken.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_')  # cut short
    (tmp_path / "notes").mkdir()  # not a store: not listed
    entries = _by_name(list_stores(str(tmp_path)))
    assert list(entries) == ["broken.zarr", "done.zarr", "more.zarr", "people/ann/half.zarr"]
    assert {n: e.state for n, e in entries.items()} == {
        "broken.zarr": "unreadable", "done.zarr": "complete", "more.zarr": "growing",
        "people/ann/half.zarr": "unfinished"}
    done, half, more = entries["done.zarr"], entries["people/ann/half.zarr"], entries["more.zarr"]
    assert (done.tokens, done.tokens_requested, done.layer, done.model) == (4000, 4000, 2, "api-written")
    assert done.dataset == "api-written.jsonl" and done.size_bytes > 4000 * 8 * 2
    assert (half.tokens, half.tokens_requested) == (1280, 4000)  # the written prefix: whole chunks of 128
    assert more.tokens == 1280 and more.tokens_requested == 4000
    broken = entries["broken.zarr"]
    assert "zarr.json is not valid JSON" in broken.problem and broken.model is None
    assert done.url == str(tmp_path / "done.zarr")
    assert list_stores(str(tmp_path / "done.zarr"))[0].name == "."  # a store itself lists as one row

    monkeypatch.setattr(console, "width", 200)  # a row to a line, as on a terminal
    result = run_cli(capsys, "store", "list", str(tmp_path))
    assert result.code == 0 and "Traceback" not in result.stderr
    out = result.stderr
    assert "4 store(s)" in out and "people/ann/half.zarr" in out and "1,280 of 4,000" in out
    problems = [line for line in result.stderr.splitlines() if line.startswith("unreadable ")]
    assert len(problems) == 1 and "broken.zarr" in problems[0] and "not valid JSON" in problems[0]
    as_json = run_cli(capsys, "store", "list", str(tmp_path), "--json")
    assert as_json.code == 0 and json.loads(as_json.stdout) == [e.to_dict() for e in entries.values()]


def test_listing_nothing_or_a_file_is_one_line(tmp_path, capsys):
    assert_one_line_error(run_cli(capsys, "store", "list", str(tmp_path / "nope")), "does not exist")
    (tmp_path / "f.txt").write_text("x")
    assert_one_line_error(run_cli(capsys, "store", "list", str(tmp_path / "f.txt")), "is a file")
    empty = run_cli(capsys, "store", "list", str(tmp_path))
    assert empty.code == 0 and empty.stderr.strip() == f"no stores under {tmp_path}"  # no empty table


def test_an_s3_prefixs_stores_with_their_states(s3, capsys):
    bucket = s3.new_bucket()
    _team(f"s3://{bucket}/team", growing=False)
    # The damaged root as an object replaced whole (what a bad upload leaves).
    import fsspec

    with fsspec.open(f"s3://{bucket}/team/broken.zarr/zarr.json", "w") as f:
        f.write("[]")
    entries = _by_name(list_stores(f"s3://{bucket}/team"))
    assert {n: e.state for n, e in entries.items()} == {
        "broken.zarr": "unreadable", "done.zarr": "complete", "people/ann/half.zarr": "unfinished"}
    assert entries["done.zarr"].url == f"s3://{bucket}/team/done.zarr" and entries["done.zarr"].tokens == 4000
    assert entries["people/ann/half.zarr"].tokens == 1280
    assert "zarr.json is not a JSON object" in entries["broken.zarr"].problem
    result = run_cli(capsys, "store", "list", f"s3://{bucket}/team")
    assert result.code == 0 and "Traceback" not in result.stderr and "3 store(s)" in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("unreadable ")]
    assert len(problems) == 1 and f"s3://{bucket}/team/broken.zarr" in problems[0]
