"""The landmarks service on a real gRPC server (port 0) with real MediaPipe on real faces."""

import os
import signal
import subprocess
import sys

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact import samples
from reenact.api.common.v1 import types_pb2
from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.launcher import ROOT, wait_serving
from reenact.runtime.status import details_of
from reenact.video import decode_video
from reenact.wire import image_from_proto, image_to_proto, tensor_from_proto
from services.landmarks.__main__ import build_server
from services.landmarks.config import LandmarksConfig

OK, NO_FACE, MULTI = (landmarks_pb2.FACE_STATUS_OK, landmarks_pb2.FACE_STATUS_NO_FACE,
                      landmarks_pb2.FACE_STATUS_MULTIPLE_FACES)


@pytest.fixture(scope="module")
def stub():
    server = build_server(LandmarksConfig(port=0, max_message_mb=32))
    server.start()
    server.servicer.warm_up()
    server.set_ready(True)
    with grpc.insecure_channel(server.address) as ch:
        yield landmarks_pb2_grpc.LandmarksServiceStub(ch)
    server.stop(drain_seconds=1, grace_seconds=0)


def frame(i, rgb, enc=types_pb2.IMAGE_ENCODING_RGB8):
    return landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(index=i, image=image_to_proto(rgb, enc)))


def config(**kw):
    return landmarks_pb2.TrackFramesRequest(config=landmarks_pb2.TrackConfig(**kw))


@pytest.mark.parametrize("face", ["astronaut", "grace_hopper"])
def test_detect_image_real_faces(stub, face):
    rgb = getattr(samples, face)()
    r = stub.DetectImage(landmarks_pb2.DetectImageRequest(
        image=image_to_proto(rgb, types_pb2.IMAGE_ENCODING_PNG), crop_size=128, return_crop=True)).result
    assert r.status == OK and r.num_faces == 1 and r.landmarks.presence > 0.5
    src = tensor_from_proto(r.landmarks.source_points, shape=(478, 3))
    crop_pts = tensor_from_proto(r.landmarks.crop_points, shape=(478, 3))
    assert image_from_proto(r.crop).shape == (128, 128, 3)
    h, w = rgb.shape[:2]
    assert (0 <= src[:, 0]).all() and (src[:, 0] <= w).all() and (src[:, 1] <= h).all()
    # FFHQ alignment: eyes level, left of the crop's middle on the image-left eye, in the upper half
    left, right = crop_pts[468], crop_pts[473]  # iris centres
    assert abs(left[1] - right[1]) < 0.03 * 128 and left[1] < 64 and right[1] < 64
    m = np.array(r.alignment.source_to_crop.matrix).reshape(2, 3)
    np.testing.assert_allclose(src[:, :2] @ m[:, :2].T + m[:, 2], crop_pts[:, :2], atol=1e-2)


def test_track_real_video_every_frame(stub):
    frames, _ = decode_video(samples.carphone_video_path(), max_frames=40)
    reqs = [config(crop_size=96, return_crop=True)] + [frame(i, f) for i, f in enumerate(frames)]
    out = list(stub.TrackFrames(iter(reqs), timeout=120))
    assert [r.index for r in out] == list(range(len(frames)))
    assert all(r.result.status != NO_FACE for r in out)
    assert all(image_from_proto(r.result.crop).shape == (96, 96, 3) for r in out)


def test_no_face_frame_keeps_stream_going_and_two_faces_reported(stub):
    astro, grace, coffee = samples.astronaut(), samples.grace_hopper(), samples.no_face_image()
    # two real faces: Grace Hopper (600 px tall) and a smaller mirrored copy of her on the right
    right = np.full((600, 340, 3), 255, np.uint8)
    right[100:500] = cv2.resize(np.ascontiguousarray(grace[:, ::-1]), (340, 400))
    two = np.ascontiguousarray(np.concatenate([grace, right], axis=1))
    reqs = [config(crop_size=64), frame(0, astro), frame(1, coffee[:512, :512].copy()), frame(2, astro)]
    out = [r.result for r in stub.TrackFrames(iter(reqs), timeout=60)]
    assert [r.status for r in out] == [OK, NO_FACE, OK]
    assert not out[1].landmarks.source_points.data
    out = [r.result for r in stub.TrackFrames(iter([config(crop_size=64), frame(0, two), frame(1, two)]))]
    assert all(r.status == MULTI and r.num_faces == 2 for r in out)
    # the larger face (left) is the one reported
    assert all(tensor_from_proto(r.landmarks.source_points)[:, 0].mean() < 512 for r in out)


@pytest.mark.parametrize("reqs,field", [
    ([config(crop_size=8)], "config.crop_size"),
    ([landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(index=0))], "config"),
])
def test_bad_config_invalid_argument(stub, reqs, field):
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.TrackFrames(iter(reqs + [frame(0, samples.astronaut())]), timeout=30))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(ei.value)["violations"][0][0] == field


def test_corrupt_frame_invalid_argument_after_good_results(stub):
    astro = samples.astronaut()
    bad = landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(index=1, image=types_pb2.Image(
        encoding=types_pb2.IMAGE_ENCODING_JPEG, data=b"\xff\xd8garbage")))
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.TrackFrames(iter([config(crop_size=64, smoothing_sigma=-1), frame(0, astro), bad]), timeout=30))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(ei.value)["violations"][0][0].startswith("frame[1].image")


def test_wrong_size_frame_rejected(stub):
    tiny = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(grpc.RpcError) as ei:
        stub.DetectImage(landmarks_pb2.DetectImageRequest(image=image_to_proto(tiny)))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_runs_alone_with_help_health_and_sigterm(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    help_text = subprocess.run([sys.executable, "-m", "services.landmarks", "--help"], capture_output=True,
                               text=True, env=env, check=True).stdout
    assert "--port" in help_text and "REENACT_LANDMARKS_PORT" in help_text and "--metrics-port" in help_text
    from reenact.launcher import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.landmarks", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", 60, proc=proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(
                service="reenact.api.landmarks.v1.LandmarksService")).status
        assert st == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = proc.stdout.read().decode()
        assert '"msg": "service stopped"' in log and '"service": "landmarks"' in log
    finally:
        proc.kill()
