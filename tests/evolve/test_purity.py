"""The evolve layer is pure: it imports no torch and does no I/O."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

EVOLVE = ROOT / "evotui" / "evolve"


def test_evolve_imports_no_torch():
    code = ("import sys, evotui.evolve, evotui.evolve.selection, evotui.evolve.mutations; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_evolve_source_has_no_io_or_global_rng():
    banned = re.compile(r"\bopen\(|\bimport (os|pathlib|shutil|sqlite3|torch)\b|"
                        r"\brandom\.(random|choice|randint|shuffle|sample)\(|print\(")
    offenders = []
    for path in EVOLVE.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if banned.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
