"""SA-Co metrics: the official toy result file (video) and hand-computed cases (image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from anyseg.errors import InvalidInputError
from anyseg.metrics import saco

TOY = "saco_veval_toy"
GT_FILE = "toy_saco_veval_sav_test_gt.json"
PRED_FILE = "toy_saco_veval_sav_test_pred.json"
RESULT_FILE = "toy_saco_veval_sav_test_eval_res.json"

OLDER_EVALUATOR_KEYS = {
    f"video_{iou}_demo_{k}"
    for iou in ("bbox", "mask")
    for k in [f"{m}_{t}" for m in ("precision", "recall", "f1", "pmf1", "cgf1") for t in ("50_95", "50", "75")]
    + ["pmf1_w0dt_50_95", "cgf1_w0dt_50_95"]
}


@pytest.fixture(scope="module")
def toy(samples_dir: Path) -> tuple[dict, dict]:
    root = samples_dir / TOY
    gt = saco.load_video_gt(root / GT_FILE)
    result = saco.evaluate_video(gt, saco.load_video_predictions(root / PRED_FILE, gt)).to_json()
    return result, json.loads((root / RESULT_FILE).read_text())


def test_toy_dataset_metrics(toy) -> None:
    """Every dataset-level key the current official evaluator writes is reproduced:
    ``video_{bbox,mask}_mAP_50_95``, ``_phrase_ap_{50_95,50,75}``,
    ``_all_phrase_{HOTA,DetA,AssA,DetRe,DetPr,AssRe,AssPr,LocA,OWTA}``,
    ``_demo_{cgf1_micro,ilmcc,positive_micro_f1}_{50_95,50,75}`` and
    ``video_mask_{teta,loc_a,assoc_a,cls_a,loc_re,loc_pr,assoc_re,assoc_pr,cls_re,cls_pr}``
    (TETA, which the official toolkit rounds to 5 significant digits), to 1e-12 (in fact
    bit for bit on the toy files).

    Not reproduced (and absent from our output): ``video_{bbox,mask}_demo_{precision,
    recall,f1,pmf1,cgf1}_{50_95,50,75}``, ``_pmf1_w0dt_50_95`` and ``_cgf1_w0dt_50_95``.
    They were written by an older evaluator version, whose cgF1 was built on a macro F1;
    the current evaluator (``VideoCGF1Evaluator``) writes the ``_micro`` variants checked
    here instead. Their values still follow from the same per-query counts, which
    ``test_toy_older_keys_follow_the_current_definitions`` checks.
    """
    ours, official = toy
    mine, theirs = ours["dataset_results"], official["dataset_results"]
    assert set(theirs) - set(mine) == OLDER_EVALUATOR_KEYS
    assert set(mine) <= set(theirs)
    for key, value in mine.items():
        assert abs(value - theirs[key]) <= 1e-12, key


def test_toy_older_keys_follow_the_current_definitions(samples_dir: Path, toy) -> None:
    """The older-version keys are not written, but the counts behind them are the same:
    precision, recall, F1 and the positive *macro* F1 of :func:`saco.cgf1_metrics` give
    ``demo_{precision,recall,f1,pmf1}``, macro F1 x IL_MCC gives ``demo_cgf1`` (the older
    cgF1), and the ``w0dt`` variants divide the macro sum by all positive queries."""
    root = samples_dir / TOY
    gt = saco.load_video_gt(root / GT_FILE)
    preds = saco.load_video_predictions(root / PRED_FILE, gt)
    official = toy[1]["dataset_results"]
    gts_by_q, dts_by_q = saco._group(gt.annotations), saco._group(preds)
    queries = sorted(set(gt.np_pairs) | set(gts_by_q) | set(dts_by_q))
    for iou_type, name in (("bbox", "bbox"), ("segm", "mask")):
        counts = [
            saco._evaluate_query(gts_by_q.get(q, []), dts_by_q.get(q, []), iou_type).counts for q in queries
        ]
        m = saco.cgf1_metrics(counts)
        fields = {"precision": "precision", "recall": "recall", "f1": "F1", "pmf1": "positive_macro_F1"}
        for index, suffix in ((None, "50_95"), (saco._I50, "50"), (saco._I75, "75")):
            for key, field in fields.items():
                expected = official[f"video_{name}_demo_{key}_{suffix}"]
                assert saco._at(m[field], index) == pytest.approx(expected, abs=1e-12)
            cgf1 = saco._at(m["positive_macro_F1"] * m["IL_MCC"], index)
            assert cgf1 == pytest.approx(official[f"video_{name}_demo_cgf1_{suffix}"], abs=1e-12)
        positives = sum(c.num_gt > 0 for c in counts)
        with_dt = sum(c.num_gt > 0 and c.num_dt > 0 for c in counts)
        w0dt = saco._at(m["positive_macro_F1"], None) * with_dt / positives
        assert w0dt == pytest.approx(official[f"video_{name}_demo_pmf1_w0dt_50_95"], abs=1e-12)
        assert w0dt * m["IL_MCC"] == pytest.approx(official[f"video_{name}_demo_cgf1_w0dt_50_95"], abs=1e-12)


def test_toy_per_video_np_metrics(toy) -> None:
    """Per (video, noun phrase): HOTA sub-metrics and TP/FP/FN/F1, including the negative
    phrase with neither ground truth nor prediction (F1 = 1)."""
    ours, official = toy
    mine = {(r["video_id"], r["category_id"]): r for r in ours["video_np_results"]}
    theirs = {(r["video_id"], r["category_id"]): r for r in official["video_np_results"]}
    assert mine.keys() == theirs.keys()
    for query, row in theirs.items():
        assert mine[query].keys() == row.keys(), query
        for key, value in row.items():
            assert abs(mine[query][key] - value) <= 1e-12, (query, key)


def test_hota_perfect_and_empty() -> None:
    ids = [np.array([0]), np.array([0]), np.array([], dtype=int)]
    sims = [np.ones((1, 1)), np.ones((1, 1)), np.zeros((0, 0))]
    perfect = saco.hota_sequence(ids, ids, sims)
    for key in ("HOTA", "DetA", "AssA", "LocA"):
        assert np.allclose(perfect[key], 1.0)
    missed = saco.hota_sequence(ids, [np.array([], dtype=int)] * 3, [np.zeros((1, 0))] * 2 + [np.zeros((0, 0))])
    assert np.all(missed["HOTA"] == 0) and np.all(missed["FN"] == 2) and np.all(missed["LocA"] == 1)


# --------------------------------------------------------------------------- images

SIZE = (10, 10)


def _rle(rows: slice, cols: slice) -> dict:
    mask = np.zeros(SIZE, dtype=np.uint8, order="F")
    mask[rows, cols] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    return rle


A, B, C = _rle(slice(0, 4), slice(0, 4)), _rle(slice(5, 10), slice(5, 10)), _rle(slice(2, 6), slice(2, 6))
B_PART = _rle(slice(5, 10), slice(5, 9))  # IoU with B: 20 / 25 = 0.8
STRAY = _rle(slice(0, 2), slice(7, 10))


def _image_case(tmp_path: Path, name: str, gt_anns: list[tuple[int, dict]]) -> Path:
    images = [
        {"id": i, "height": SIZE[0], "width": SIZE[1], "is_instance_exhaustive": i != 6}
        for i in range(1, 7)
    ]
    anns = [
        {"id": k + 1, "image_id": img, "segmentation": rle, "bbox": mask_utils.toBbox(rle).tolist(),
         "iscrowd": 0, "category_id": 1}
        for k, (img, rle) in enumerate(gt_anns)
    ]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return path


PREDICTIONS = [
    (1, A, 0.9),  # exact: TP at every threshold
    (1, B_PART, 0.8),  # IoU 0.8: TP at 0.50..0.80 (7 thresholds), FP + FN above
    (1, STRAY, 0.7),  # FP
    (1, C, 0.3),  # below the 0.5 score threshold: ignored
    (3, C, 0.6),  # image without ground truth: IL false positive
    (5, C, 0.4),  # below threshold: image 5 stays a true negative
    (6, A, 0.9),  # image 6 is not exhaustive: not scored
]
GT_MAIN = [(1, A), (1, B), (2, C), (6, B)]  # image 2: missed entirely (IL false negative)


@pytest.fixture()
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    preds = [
        {"image_id": img, "segmentation": rle, "bbox": mask_utils.toBbox(rle).tolist(), "score": s, "category_id": 1}
        for img, rle, s in PREDICTIONS
    ]
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(preds))
    return _image_case(tmp_path, "gt.json", GT_MAIN), pred_path


def _expected(il: tuple[int, int, int, int]) -> dict[str, float]:
    """Hand-computed cgF1 family: TP/FP/FN of image 1 per threshold, plus image 2's FN."""
    il_tp, il_fp, il_tn, il_fn = il
    mcc = (il_tp * il_tn - il_fp * il_fn) / (
        ((il_tp + il_fp) * (il_tp + il_fn) * (il_tn + il_fp) * (il_tn + il_fn)) ** 0.5 + 1e-6
    )
    extra_fn = 1 if il_fn else 0

    def pm_f1(tp: int, fp: int, fn: int) -> float:
        precision, recall = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
        return 2 * precision * recall / (precision + recall + 1e-4)

    low, high = pm_f1(2, 1, 0 + extra_fn), pm_f1(1, 2, 1 + extra_fn)  # IoU thr <= 0.8 / > 0.8
    return {"IL_MCC": mcc, "pmF1": (7 * low + 3 * high) / 10, "pmF1@0.5": low, "pmF1@0.75": low}


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_image_hand_computed(image_files, iou_type: str) -> None:
    gt_path, pred_path = image_files
    gt = saco.load_image_gt(gt_path)
    out = saco.evaluate_image([gt], saco.load_image_predictions(pred_path, gt), iou_types=[iou_type])
    expected = _expected((1, 1, 2, 1))  # IL: TP image 1, FP image 3, TN images 4-5, FN image 2
    assert expected["IL_MCC"] == pytest.approx(1 / 6, abs=1e-6)
    assert out[f"cgF1_eval_{iou_type}_IL_MCC"] == pytest.approx(expected["IL_MCC"], rel=1e-12)
    assert out[f"cgF1_eval_{iou_type}_positive_micro_F1"] == pytest.approx(expected["pmF1"], rel=1e-12)
    assert out[f"cgF1_eval_{iou_type}_cgF1"] == pytest.approx(expected["pmF1"] * expected["IL_MCC"], rel=1e-12)
    assert out[f"cgF1_eval_{iou_type}_positive_micro_F1@0.5"] == pytest.approx(expected["pmF1@0.5"], rel=1e-12)
    assert out[f"cgF1_eval_{iou_type}_IL_FPR"] == pytest.approx(1 / 3, rel=1e-5)


def test_image_oracle_over_several_ground_truths(image_files, tmp_path: Path) -> None:
    """A second annotation without image 2's object makes image 2 a perfect true negative,
    which the oracle prefers."""
    gt_path, pred_path = image_files
    second = _image_case(tmp_path, "gt2.json", [(1, A), (1, B)])
    gts = [saco.load_image_gt(gt_path), saco.load_image_gt(second)]
    out = saco.evaluate_image(gts, saco.load_image_predictions(pred_path, gts[0]), iou_types=["segm"])
    expected = _expected((1, 1, 3, 0))
    assert out["cgF1_eval_segm_IL_MCC"] == pytest.approx(expected["IL_MCC"], rel=1e-12)
    assert out["cgF1_eval_segm_positive_micro_F1"] == pytest.approx(expected["pmF1"], rel=1e-12)


def test_single_frame_videos_match_images(image_files, tmp_path: Path) -> None:
    """On one-frame videos, with every exhaustive image a video noun-phrase pair, the video
    cgF1 family equals the image one (spatio-temporal IoU = frame IoU)."""
    gt_path, pred_path = image_files
    gt_img = json.loads(gt_path.read_text())
    exhaustive = [im["id"] for im in gt_img["images"] if im["is_instance_exhaustive"]]
    video_gt = {
        "videos": [
            {"id": i, "height": SIZE[0], "width": SIZE[1], "file_names": [f"v{i}/0.jpg"], "length": 1}
            for i in exhaustive
        ],
        "annotations": [
            {"id": a["id"], "video_id": a["image_id"], "category_id": 1, "segmentations": [a["segmentation"]],
             "bboxes": [a["bbox"]], "areas": [int(mask_utils.area(a["segmentation"]))], "iscrowd": 0}
            for a in gt_img["annotations"] if a["image_id"] in exhaustive
        ],
        "categories": [{"id": 1, "name": "x"}],
        "video_np_pairs": [{"video_id": i, "category_id": 1} for i in exhaustive],
    }
    video_preds = [
        {"video_id": p["image_id"], "category_id": 1, "score": p["score"], "segmentations": [p["segmentation"]],
         "bboxes": [p["bbox"]], "areas": [int(mask_utils.area(p["segmentation"]))]}
        for p in json.loads(pred_path.read_text()) if p["image_id"] in exhaustive
    ]
    (tmp_path / "vgt.json").write_text(json.dumps(video_gt))
    (tmp_path / "vpred.json").write_text(json.dumps(video_preds))
    vgt = saco.load_video_gt(tmp_path / "vgt.json")
    video = saco.evaluate_video(vgt, saco.load_video_predictions(tmp_path / "vpred.json", vgt)).dataset
    igt = saco.load_image_gt(gt_path)
    image = saco.evaluate_image([igt], saco.load_image_predictions(pred_path, igt))
    for iou_type, name in (("segm", "mask"), ("bbox", "bbox")):
        for suffix, thr in (("50_95", ""), ("50", "@0.5"), ("75", "@0.75")):
            assert video[f"video_{name}_demo_cgf1_micro_{suffix}"] == image[f"cgF1_eval_{iou_type}_cgF1{thr}"]
            assert video[f"video_{name}_demo_positive_micro_f1_{suffix}"] == image[
                f"cgF1_eval_{iou_type}_positive_micro_F1{thr}"
            ]
        assert video[f"video_{name}_demo_ilmcc_50_95"] == image[f"cgF1_eval_{iou_type}_IL_MCC"]


def test_bad_inputs(tmp_path: Path, image_files) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        saco.load_video_gt(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        saco.load_video_gt(tmp_path / "broken.json")
    gt_path, _ = image_files
    gt = saco.load_image_gt(gt_path)
    (tmp_path / "stray.json").write_text(json.dumps([{"image_id": 99, "score": 1.0, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(InvalidInputError, match="absent from the ground truth"):
        saco.load_image_predictions(tmp_path / "stray.json", gt)
    wrong_size = {"size": [5, 5], "counts": "05"}
    (tmp_path / "size.json").write_text(json.dumps([{"image_id": 1, "score": 1.0, "segmentation": wrong_size}]))
    with pytest.raises(InvalidInputError, match="not the media size"):
        saco.load_image_predictions(tmp_path / "size.json", gt)
