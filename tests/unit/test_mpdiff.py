"""reenact.mpdiff: MediaPipe face-landmark networks re-executed in PyTorch.

Exactness is checked against MediaPipe's own runtime (its ``InferenceCalculator`` on the very same
192x192 crop, and the full ``face_mesh`` graph on whole images) on real faces shipped with
scikit-image (astronaut) and matplotlib (Grace Hopper), plus mirrored / rotated / cropped variants.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

mp = pytest.importorskip("mediapipe")

from reenact.mpdiff import crop as C  # noqa: E402
from reenact.mpdiff.face_landmark import (  # noqa: E402
    _OUTPUTS,
    LEFT_EYE_IDX,
    LIPS_IDX,
    RIGHT_EYE_IDX,
    FaceLandmarkNet,
    mediapipe_reference,
)
from reenact.mpdiff.ops import (  # noqa: E402
    SUPPORTED_OPS,
    TFLiteModule,
    conv2d,
    landmarks_to_transform_matrix_v2,
    pool2d,
    same_padding,
    transform_landmarks_v2,
    transform_tensor_bilinear_v2,
)
from reenact.mpdiff.tflite_graph import (  # noqa: E402
    OperatorInfo,
    TensorInfo,
    TFLiteGraph,
    load_tflite,
    mediapipe_model_path,
)

TOL_PX = 1e-3  # acceptance: max |torch - MediaPipe| on the same crop, in 192-crop pixels
MODELS = ("basic", "attention")
FILES = {"basic": "face_landmark.tflite", "attention": "face_landmark_with_attention.tflite"}


# ----------------------------------------------------------------------------------------------
# fixtures: real faces, MediaPipe's face mesh, crops
# ----------------------------------------------------------------------------------------------
def _faces() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import matplotlib.pyplot as plt
    import skimage.data

    astro = np.ascontiguousarray(skimage.data.astronaut()[..., :3])
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.ascontiguousarray(plt.imread(f)[..., :3])
    return {"astronaut": astro, "hopper": hopper}


def _rotate(img: np.ndarray, deg: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def face_mesh_full(img: np.ndarray, model: str):
    """MediaPipe's face_mesh graph (static mode) on a whole image -> (landmarks px [K,3], ROI from the
    detection [1,5] px that those landmarks were computed in, ROI from the landmarks [1,5] px)."""
    from mediapipe.python.solution_base import SolutionBase
    from mediapipe.python.solutions import face_mesh

    sb = SolutionBase(
        binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
        side_inputs={"num_faces": 1, "with_attention": model == "attention", "use_prev_landmarks": False},
        outputs=["multi_face_landmarks", "face_rects_from_detections", "face_rects_from_landmarks"],
    )
    try:
        r = sb.process({"image": np.ascontiguousarray(img)})
    finally:
        sb.close()
    assert r.multi_face_landmarks, "MediaPipe found no face"
    h, w = img.shape[:2]
    lm = np.array([[p.x * w, p.y * h, p.z * w] for p in r.multi_face_landmarks[0].landmark], np.float32)
    det = C.normalized_rect_to_pixels(r.face_rects_from_detections[0], h, w)
    from_lm = C.normalized_rect_to_pixels(r.face_rects_from_landmarks[0], h, w)
    return lm, det, from_lm


def mediapipe_crop(img: np.ndarray, rect: torch.Tensor) -> np.ndarray:
    """MediaPipe's CPU crop (ImageToTensorCalculator, OpenCV path): the rotated rect's corners
    (cv::boxPoints) -> perspective warp to 192x192, bilinear, replicated border, uint8."""
    cx, cy, w, h, a = (float(v) for v in rect.reshape(-1))
    src = cv2.boxPoints(((cx, cy), (w, h), a * 180.0 / math.pi)).astype(np.float32)
    dst = np.array([[0, 192], [0, 0], [192, 0], [192, 192]], np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def faces():
    return _faces()


@pytest.fixture(scope="module")
def crops(faces):
    """Several 192x192 face crops: MediaPipe's tracking ROI (rotation-normalized) on the originals,
    a mirrored and a rotated image, plus axis-aligned crops in which the face is tilted / off-centre."""
    astro, hopper = faces["astronaut"], faces["hopper"]
    out = {}
    variants = {
        "astronaut": (astro, True),
        "astronaut_mirror": (np.ascontiguousarray(astro[:, ::-1]), True),
        "astronaut_rot25_axis_aligned": (_rotate(astro, 25), False),
        "hopper": (hopper, True),
        "hopper_rot-30": (_rotate(hopper, -30), True),
        "hopper_crop_axis_aligned": (np.ascontiguousarray(hopper[40:420, 60:460]), False),
    }
    for name, (img, rotated_roi) in variants.items():
        lm, _, _ = face_mesh_full(img, "basic")
        rect = C.roi_from_landmarks(torch.from_numpy(lm)[None])
        if not rotated_roi:
            rect[:, 4] = 0.0
            rect[:, 0] += 0.08 * rect[:, 2]  # off-centre too
        out[name] = mediapipe_crop(img, rect)
    return out


@pytest.fixture(scope="module")
def nets():
    return {m: FaceLandmarkNet.from_mediapipe(m) for m in MODELS}


@pytest.fixture(scope="module")
def references(crops):
    return {(m, name): mediapipe_reference(crop, m) for m in MODELS for name, crop in crops.items()}


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].contiguous()


# ----------------------------------------------------------------------------------------------
# graph reading
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_graph_ops_supported_and_fp16_weights(model):
    g = load_tflite(mediapipe_model_path(FILES[model]))
    counts = g.op_counts()
    assert set(counts) <= set(SUPPORTED_OPS), counts
    print(f"\n{model}: {dict(counts)}")
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD", "DEQUANTIZE"} <= set(counts)
    # weights are fp16 buffers behind DEQUANTIZE, folded into float32 constants
    deq = [o for o in g.operators if o.op == "DEQUANTIZE"]
    assert deq and all(g.tensors[o.inputs[0]].dtype == np.float16 for o in deq)
    assert [g.tensors[i].name for i in g.outputs] == list(_OUTPUTS[model].values())
    if model == "basic":
        n_params = sum(g.constant(o.outputs[0]).size for o in deq)
        assert n_params == 604_685
    else:
        assert counts["Landmarks2TransformMatrix"] == 3 and counts["TransformTensorBilinear"] == 3
        assert counts["TransformLandmarks"] == 5
        subsets = [
            tuple(o.options["subset_idxs"]) for o in g.operators if o.op == "Landmarks2TransformMatrix"
        ]
        assert subsets == [LIPS_IDX, LEFT_EYE_IDX, RIGHT_EYE_IDX]  # refinement maps == attention regions


# ----------------------------------------------------------------------------------------------
# op semantics against direct NumPy implementations of TFLite's kernels
# ----------------------------------------------------------------------------------------------
def test_same_padding_is_tflites_asymmetric_rule():
    assert same_padding(192, 3, 2) == (0, 1)
    assert same_padding(96, 3, 1) == (1, 1)
    assert same_padding(7, 2, 2) == (0, 1)
    assert same_padding(8, 4, 2) == (1, 1)
    assert same_padding(5, 1, 2) == (0, 0)
    assert same_padding(10, 3, 1, dilation=2) == (2, 2)


def _np_conv_nhwc(x, w, b, stride, pad):
    """TFLite CONV_2D reference: x [H,W,I], w [O,KH,KW,I], zero padding (top, left) given."""
    h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    oh, ow = (h + stride - 1) // stride, (wd + stride - 1) // stride
    out = np.zeros((oh, ow, o))
    for y in range(oh):
        for xx in range(ow):
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = y * stride - pad[0] + dy, xx * stride - pad[1] + dx
                    if 0 <= iy < h and 0 <= ix < wd:
                        out[y, xx] += w[:, dy, dx, :] @ x[iy, ix]
    return out + b


@pytest.mark.parametrize("size,k,stride", [(7, 3, 2), (8, 3, 2), (6, 2, 2), (5, 3, 1)])
def test_conv2d_same_padding_matches_tflite_rule(size, k, stride):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, size, 3))
    w = rng.normal(size=(4, k, k, 3))
    b = rng.normal(size=4)
    ph = same_padding(size, k, stride)
    ref = _np_conv_nhwc(x, w, b, stride, (ph[0], ph[0]))
    got = conv2d(
        torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(w).permute(0, 3, 1, 2),
        torch.from_numpy(b), (stride, stride), (1, 1), "SAME",
    )  # fmt: skip
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), ref, atol=1e-10)


def test_max_pool_same_ignores_padding():
    x = -torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)  # all negative: zero padding would win
    y = pool2d(x, "MAX", (2, 2), (2, 2), "SAME")
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 2, 2].item() == -25.0 and y[0, 0, 0, 0].item() == -1.0
    a = pool2d(torch.ones(1, 1, 5, 5), "AVG", (2, 2), (2, 2), "SAME")
    assert torch.allclose(a, torch.ones_like(a))


def _toy_graph() -> TFLiteGraph:
    """A hand-built NHWC graph: channel PAD -> MAX_POOL(SAME) -> CONCAT(with const, axis 3) ->
    ADD(bias [C]) -> STRIDED_SLICE (channels 1:5) -> RESHAPE [1, N]."""
    rng = np.random.default_rng(1)
    const = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
    bias = rng.normal(size=(6,)).astype(np.float32)
    t = [
        TensorInfo(0, "x", (1, 5, 5, 3), np.float32),
        TensorInfo(1, "pads", (4, 2), np.int32, np.array([[0, 0], [0, 0], [0, 0], [0, 1]], np.int32)),
        TensorInfo(2, "padded", (1, 5, 5, 4), np.float32),
        TensorInfo(3, "pooled", (1, 3, 3, 4), np.float32),
        TensorInfo(4, "const", (1, 3, 3, 2), np.float32, const),
        TensorInfo(5, "cat", (1, 3, 3, 6), np.float32),
        TensorInfo(6, "bias16", (6,), np.float16, bias.astype(np.float16)),
        TensorInfo(7, "bias", (6,), np.float32),
        TensorInfo(8, "sum", (1, 3, 3, 6), np.float32),
        TensorInfo(9, "begin", (4,), np.int32, np.array([0, 0, 0, 1], np.int32)),
        TensorInfo(10, "end", (4,), np.int32, np.array([1, 3, 3, 5], np.int32)),
        TensorInfo(11, "strides", (4,), np.int32, np.array([1, 1, 1, 1], np.int32)),
        TensorInfo(12, "sliced", (1, 3, 3, 4), np.float32),
        TensorInfo(13, "flat", (1, 36), np.float32),
    ]
    ops = [
        OperatorInfo(0, "PAD", False, 1, (0, 1), (2,)),
        OperatorInfo(1, "MAX_POOL_2D", False, 1, (2,), (3,),
                     {"padding": "SAME", "stride": (2, 2), "filter": (2, 2), "activation": "NONE"}),
        OperatorInfo(2, "CONCATENATION", False, 1, (3, 4), (5,), {"axis": -1, "activation": "NONE"}),
        OperatorInfo(3, "DEQUANTIZE", False, 1, (6,), (7,)),
        OperatorInfo(4, "ADD", False, 1, (5, 7), (8,), {"activation": "RELU"}),
        OperatorInfo(5, "STRIDED_SLICE", False, 1, (8, 9, 10, 11), (12,),
                     {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0,
                      "shrink_axis_mask": 0, "offset": False}),
        OperatorInfo(6, "RESHAPE", False, 1, (12,), (13,), {"new_shape": (1, 36)}),
    ]  # fmt: skip
    return TFLiteGraph(t, ops, (0,), (13,))


def test_layout_sensitive_ops_on_a_toy_graph():
    g = _toy_graph()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)  # batch 2 although the graph says 1
    # NumPy reference in NHWC
    p = np.concatenate([x, np.zeros((2, 5, 5, 1), np.float32)], -1)
    p = np.pad(p, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
    pooled = p.reshape(2, 3, 2, 3, 2, 4).max(axis=(2, 4))
    cat = np.concatenate([pooled, np.broadcast_to(g.tensors[4].data, (2, 3, 3, 2))], -1)
    s = np.maximum(cat + g.tensors[6].data.astype(np.float32), 0)
    ref = s[..., 1:5].reshape(2, 36)
    m = TFLiteModule(g)
    (got,) = m(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-6)


def _np_l2tm(lm, o):
    """Landmarks2TransformMatrix v2, written after mediapipe's C++ (4x4 products in float64)."""
    left, r = lm[o["left_rotation_idx"], :2], lm[o["right_rotation_idx"], :2]
    rot = o["target_rotation_radians"] - math.atan2(r[1] - left[1], r[0] - left[0])
    pts = lm[list(o["subset_idxs"]), :2]
    c, s = math.cos(rot), math.sin(rot)
    rp = pts @ np.array([[c, -s], [s, c]]).T
    mn, mx = rp.min(0), rp.max(0)
    mid = (mn + mx) / 2
    ci, si = math.cos(-rot), math.sin(-rot)
    cx, cy = np.array([[ci, -si], [si, ci]]) @ mid

    def mat(a, b, tx, d, e, ty):  # noqa: E306
        return np.array([[a, b, 0, tx], [d, e, 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)

    w, h = o["output_width"], o["output_height"]
    t = mat(1, 0, cx, 0, 1, cy)
    t = t @ mat(math.cos(-rot), -math.sin(-rot), 0, math.sin(-rot), math.cos(-rot), 0)
    t = t @ mat(o["scale_x"] * (mx - mn)[0] / w, 0, 0, 0, o["scale_y"] * (mx - mn)[1] / h, 0)
    return t @ mat(1, 0, -w / 2, 0, 1, -h / 2)


def _np_ttb(x, m, oh, ow):
    """TransformTensorBilinear v2 (NHWC), written after mediapipe's C++ loop."""
    h, w, _ = x.shape
    xt, yt = m[0].copy(), m[1].copy()
    xt[3] += xt[0] * 0.5 + xt[1] * 0.5 - 0.5
    yt[3] += yt[0] * 0.5 + yt[1] * 0.5 - 0.5
    out = np.zeros((oh, ow, x.shape[2]))

    def read(yy, xx):
        return x[yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.0

    for oy in range(oh):
        for ox in range(ow):
            tx = xt[0] * ox + xt[1] * oy + xt[3]
            ty = yt[0] * ox + yt[1] * oy + yt[3]
            if tx < 0 or tx > w - 1 or ty < 0 or ty > h - 1:
                continue
            fx, fy = math.floor(tx), math.floor(ty)
            rx, ry = tx - fx, ty - fy
            up = (1 - rx) * read(fy, fx) + rx * read(fy, fx + 1)
            lo = (1 - rx) * read(fy + 1, fx) + rx * read(fy + 1, fx + 1)
            out[oy, ox] = ry * lo + (1 - ry) * up
    return out


def test_custom_ops_match_mediapipe_semantics():
    g = load_tflite(mediapipe_model_path(FILES["attention"]))
    opts = next(o.options for o in g.operators if o.op == "Landmarks2TransformMatrix")
    rng = np.random.default_rng(3)
    lm = np.concatenate([rng.uniform(5, 40, size=(468, 2)), rng.normal(size=(468, 1))], -1)
    ref_m = _np_l2tm(lm, opts)
    got_m = landmarks_to_transform_matrix_v2(
        torch.from_numpy(lm)[None], opts["left_rotation_idx"], opts["right_rotation_idx"], opts["subset_idxs"],
        opts["target_rotation_radians"], opts["output_width"], opts["output_height"], opts["scale_x"],
        opts["scale_y"],
    )[0].numpy()  # fmt: skip
    np.testing.assert_allclose(got_m, ref_m, atol=1e-9)

    x = rng.normal(size=(12, 10, 3))
    for m in (ref_m / 4, np.array([[0.9, 0.3, 0, -2.0], [-0.2, 1.1, 0, 1.5], [0, 0, 1, 0], [0, 0, 0, 1]])):
        ref = _np_ttb(x, m, 16, 16)
        got = transform_tensor_bilinear_v2(
            torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(m)[None], 16, 16
        )
        np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), ref, atol=1e-12)

    pts = rng.normal(size=(1, 5, 2))
    got = transform_landmarks_v2(torch.from_numpy(pts), torch.from_numpy(ref_m)[None])[0].numpy()
    np.testing.assert_allclose(got, pts[0] @ ref_m[:2, :2].T + ref_m[:2, 3], atol=1e-12)


def test_custom_ops_gradcheck():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(1, 2, 8, 8))).requires_grad_(True)
    m = torch.tensor(
        [[[0.37, 0.08, 0, 0.61], [-0.05, 0.41, 0, 0.93], [0, 0, 1, 0], [0, 0, 0, 1]]], dtype=torch.float64
    )
    m.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: transform_tensor_bilinear_v2(a, b, 5, 5), (x, m))
    lm = torch.from_numpy(rng.uniform(0, 10, size=(1, 12, 3))).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: landmarks_to_transform_matrix_v2(a, 0, 3, range(12), 0.0, 16, 16, 1.5, 1.5), (lm,)
    )


# ----------------------------------------------------------------------------------------------
# exactness against MediaPipe's runtime on the same 192x192 crops
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_matches_mediapipe_on_same_crop(model, nets, crops, references):
    net = nets[model]
    worst = {}
    for name in crops:
        ref = references[(model, name)]
        # MediaPipe's input tensor is crop/255 (checked), fed unchanged to the torch net
        np.testing.assert_allclose(ref["input"], crops[name] / np.float32(255), atol=1e-7)
        with torch.no_grad():
            raw = net.forward_raw(_nchw(ref["input"]))
            pts, logit = net.points_from_raw(raw), raw["presence"]
        assert pts.shape == (1, 478 if model == "attention" else 468, 3)
        d_pts = np.abs(pts[0].numpy() - ref["points"]).max()
        d_raw = max(np.abs(raw[k][0].numpy() - ref[k]).max() for k in raw if k != "presence")
        d_logit = abs(logit.item() - ref["presence"])
        worst[name] = (d_pts, d_raw, d_logit)
        assert d_pts <= TOL_PX and d_raw <= TOL_PX and d_logit <= 1e-3, (name, worst[name])
        assert ref["presence"] > 0, f"{name}: MediaPipe sees no face in the crop"
    print(f"\n{model}: max |torch - mediapipe| px (points, raw outputs, logit): {worst}")


@pytest.mark.parametrize("model", MODELS)
def test_batched_equals_single_and_nhwc_input(model, nets, crops, references):
    net = nets[model]
    names = list(crops)
    x = torch.cat([_nchw(references[(model, n)]["input"]) for n in names])
    with torch.no_grad():
        pts, logit = net(x)
        pts_nhwc, _ = net(x.permute(0, 2, 3, 1))
    for i, n in enumerate(names):
        assert np.abs(pts[i].numpy() - references[(model, n)]["points"]).max() <= TOL_PX
        assert abs(logit[i].item() - references[(model, n)]["presence"]) <= 1e-3
    assert torch.allclose(pts, pts_nhwc, atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_gradients_reach_the_input_image(model, nets, crops):
    net = nets[model]
    x = _nchw(crops["hopper"].astype(np.float32) / 255).requires_grad_(True)
    pts, logit = net(x)
    (pts[..., :2].square().mean() + logit.sum()).backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert (g.abs() > 0).float().mean() > 0.5  # dense, not a few pixels
    assert all(not p.requires_grad for p in net.parameters())


# ----------------------------------------------------------------------------------------------
# crop geometry: MediaPipe's ROI recipe, crop sampling and projection back to the frame
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_end_to_end_matches_face_mesh_on_full_images(model, nets, faces):
    """face_mesh on a whole image == our ROI + MediaPipe-style crop + torch net + projection; the
    differentiable grid_sample crop stays within a small fraction of a pixel."""
    for name, img in faces.items():
        lm, det_rect, lm_rect = face_mesh_full(img, model)
        # ROI recipe from landmarks == MediaPipe's (FaceLandmarkLandmarksToRoi)
        ours = C.roi_from_landmarks(torch.from_numpy(lm)[None])
        assert torch.allclose(ours, lm_rect, atol=1e-3), (ours, lm_rect)
        affine = C.rect_to_affine(det_rect)
        x = _nchw(mediapipe_crop(img, det_rect).astype(np.float32) / 255)
        frame = _nchw(img.astype(np.float32) / 127.5 - 1.0)  # a generator-style [-1, 1] frame
        x_grid = C.crop_frame(frame, affine)
        with torch.no_grad():
            pts, _ = nets[model](torch.cat([x, x_grid]))
        back = C.points_to_frame(pts, affine.expand(2, 2, 3)).numpy()
        d_exact = np.abs(back[0] - lm)
        d_grid = np.abs(back[1] - lm)[:, :2].max()
        print(f"\n{model}/{name}: face_mesh vs replica crop: xy {d_exact[:, :2].max():.2e} z {d_exact[:, 2].max():.2e} px;"
              f" vs differentiable crop: xy {d_grid:.3f} px (ROI side {float(det_rect[0, 2]):.0f} px)")  # fmt: skip
        assert d_exact.max() <= TOL_PX
        assert d_grid <= 0.15


def test_crop_frame_geometry_and_gradients():
    torch.manual_seed(0)
    frame = torch.rand(2, 3, 40, 50) * 2 - 1
    # a rect whose crop pixels land exactly on frame pixels: 192 crop px over 192 frame px
    big = torch.rand(1, 3, 200, 210)
    rect = torch.tensor([[100.0, 96.0, 192.0, 192.0, 0.0]])
    out = C.crop_frame(big, C.rect_to_affine(rect), value_range=(0, 1))
    assert torch.allclose(out, big[:, :, 0:192, 4:196], atol=1e-4)  # float32 grid normalization
    # points round trip and rotation convention (positive angle = clockwise on screen, y down)
    a = C.rect_to_affine(torch.tensor([[20.0, 10.0, 96.0, 96.0, math.pi / 2]]))
    p = torch.tensor([[[96.0, 96.0, 1.0], [192.0, 96.0, 0.0]]])
    f = C.points_to_frame(p, a)
    assert torch.allclose(f[0, 0], torch.tensor([20.0, 10.0, 0.5]), atol=1e-5)
    assert torch.allclose(f[0, 1, :2], torch.tensor([20.0, 58.0]), atol=1e-4)  # +u maps to +y
    assert torch.allclose(C.points_to_crop(f, a), p, atol=1e-4)
    # gradients flow to the frame and to the rect
    frame.requires_grad_(True)
    rect = torch.tensor([[25.0, 20.0, 30.0, 30.0, 0.2]], requires_grad=True)
    x = C.crop_frame(frame, C.rect_to_affine(rect).expand(2, 2, 3))
    assert x.shape == (2, 3, 192, 192) and 0 <= x.min() and x.max() <= 1
    x.square().mean().backward()
    assert frame.grad.abs().sum() > 0 and rect.grad.abs().sum() > 0
    fixed = C.aligned_face_rect(256)
    assert fixed.shape == (1, 5) and abs(float(fixed[0, 2]) - 0.92 * 256) < 1e-3


def test_pipeline_gradient_from_points_to_frame(nets, faces):
    img = faces["astronaut"]
    lm, rect, _ = face_mesh_full(img, "attention")
    frame = _nchw(img.astype(np.float32) / 127.5 - 1.0).requires_grad_(True)
    affine = C.rect_to_affine(rect)
    pts, logit = nets["attention"](C.crop_frame(frame, affine))
    back = C.points_to_frame(pts, affine)
    assert np.abs(back[0, :, :2].detach().numpy() - lm[:, :2]).max() < 0.15  # face_mesh itself
    (back[0, 468:, :2] - torch.from_numpy(lm[468:, :2])).square().sum().backward()
    assert frame.grad is not None and frame.grad.abs().sum() > 0
