"""The one place that maps domain errors to gRPC status codes with google.rpc.Status details."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from reenact.errors import ReenactError

log = logging.getLogger("reenact.runtime.status")

DOMAIN = "reenact.dev"


def to_status(err: ReenactError) -> status_pb2.Status:
    """Domain error -> google.rpc.Status with BadRequest / RetryInfo / ErrorInfo details."""
    code = getattr(code_pb2, err.kind)
    details = []
    if err.violations:
        br = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in err.violations
            ]
        )
        details.append(br)
    if err.retry_after_s is not None:
        secs = max(0.0, float(err.retry_after_s))
        details.append(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(secs), nanos=int((secs % 1) * 1e9))))
    if err.reason:
        details.append(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code, message=err.message, details=packed)


def abort(context: grpc.ServicerContext, err: ReenactError) -> None:
    """Abort the RPC with the mapped status (raises)."""
    context.abort_with_status(rpc_status.to_status(to_status(err)))


def grpc_code_of(err: BaseException) -> grpc.StatusCode:
    if isinstance(err, ReenactError):
        return getattr(grpc.StatusCode, err.kind)
    return grpc.StatusCode.INTERNAL


def details_of(rpc_error: grpc.RpcError) -> dict:
    """Client side: decode google.rpc.Status details of a failed call into a plain dict."""
    st = rpc_status.from_call(rpc_error)
    out: dict = {"violations": [], "retry_after_s": None, "reason": ""}
    if st is None:
        return out
    for d in st.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            out["violations"] += [(v.field, v.description) for v in br.field_violations]
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            out["retry_after_s"] = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            d.Unpack(ei)
            out["reason"] = ei.reason
    return out
