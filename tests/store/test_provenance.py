"""What every record says of where it came from."""

import re
import subprocess
from importlib.metadata import version

from store.provenance import LIBRARIES, NOT_A_CHECKOUT, SOURCE_ROOT, Provenance, git_commit, provenance


def test_provenance_names_the_tool_its_commit_and_the_libraries():
    p = provenance("cpu")
    assert p.tool_version == version("hfg-sae") and p.device == "cpu" and p.python
    assert set(p.libraries) == set(LIBRARIES) and p.libraries["torch"] == version("torch")
    head = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (the suite runs in one); an installed wheel says it is none
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", p.git_commit) and p.git_commit.startswith(head.stdout.strip())
    assert Provenance.from_dict(p.to_dict()) == p
    assert p.git_commit.split("+")[0][:7] in p.describe()


def test_a_folder_that_is_no_checkout_says_so(tmp_path):
    assert git_commit(tmp_path) == NOT_A_CHECKOUT
