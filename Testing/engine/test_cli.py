"""The ``samba`` command end to end on a real case, and its answers to bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import SimpleITK as sitk

from SAMBASegmentLib.cli import build_parser, main
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import load_case, same_geometry


def test_segment_writes_the_tumour_with_source_geometry(tmp_path, real_case, slab_case):
    folder = slab_case(real_case.name)
    slab = load_case(folder)
    truth = region_mask(slab.label, "WT")
    box = box3d_prompt(truth, 0).box
    (k0, j0, i0), (k1, j1, i1) = box.lo, box.hi
    output = tmp_path / "tumour.nrrd"
    args = ["segment", str(folder), "--box", *map(str, (i0, j0, k0, i1, j1, k1)), "--output", str(output),
            "--views", "1", "--no-adapter"]
    assert main(args) == 0
    written = sitk.ReadImage(str(output))
    assert same_geometry(written, slab.reference)
    assert dice(sitk.GetArrayFromImage(written) > 0, truth) > 0.85


def test_segment_with_a_ras_box_matches_the_ijk_box(tmp_path, real_case, data_dir):
    reference = real_case.reference
    ijk = (80, 60, 50, 120, 110, 90)
    corners = []
    for index in (ijk[:3], ijk[3:]):
        x, y, z = reference.TransformIndexToPhysicalPoint(index)
        corners += [-x, -y, z]  # LPS → RAS
    from SAMBASegmentLib.cli import _ras_box_to_ijk

    assert _ras_box_to_ijk(real_case, corners) == list(ijk)


def test_evaluate_writes_per_case_figures_and_summary(tmp_path, data_dir, slab_case):
    report = tmp_path / "eval.json"
    overlays = tmp_path / "png"
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "x_flair.nii.gz").symlink_to(data_dir / "Brats18_2013_3_1" / "Brats18_2013_3_1_flair.nii.gz")
    slab = slab_case("Brats18_TCIA02_135_1")
    assert build_parser().parse_args(["evaluate", str(slab), "--prompt", "box3d"]).views == 3  # 3 views by default
    code = main(["evaluate", str(slab), str(unlabelled), "--prompt", "box3d", "--views", "1",
                 "--json", str(report), "--overlays", str(overlays), "--no-adapter"])
    assert code == 0
    result = json.loads(report.read_text())
    assert [c["case"] for c in result["cases"]] == ["Brats18_TCIA02_135_1"]
    assert result["views"] == 1
    assert result["skipped"] == [{"case": "unlabelled", "reason": "unlabelled: no label map"}]
    assert result["summary"]["WT"]["dice"] == result["cases"][0]["WT"]["dice"] > 0.8
    assert result["summary"]["WT"]["hd95"] > 0 and result["summary"]["seconds_per_case"] > 0
    assert (overlays / "Brats18_TCIA02_135_1_flair_box3d.png").stat().st_size > 10_000


def test_bad_input_gives_a_clear_error_and_exit_code(tmp_path, data_dir):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "SAMBASegmentLib.cli", *args], capture_output=True, text=True)

    missing = run("segment", str(tmp_path / "nope"), "--box", "1", "1", "1", "5", "5", "5", "--output", "x.nii.gz")
    assert missing.returncode == 2 and "case folder not found" in missing.stderr
    outside = run("segment", str(data_dir / "Brats18_TCIA02_135_1"), "--box", "500", "1", "1", "600", "5", "5",
                  "--output", str(tmp_path / "x.nii.gz"))
    assert outside.returncode == 2 and "lies outside the volume" in outside.stderr
    assert "Traceback" not in outside.stderr and not (tmp_path / "x.nii.gz").exists()
    views = run("evaluate", str(data_dir / "Brats18_TCIA02_135_1"), "--prompt", "box3d", "--views", "2")
    assert views.returncode == 2 and "--views: invalid choice: 2 (choose from 1, 3)" in views.stderr
