import grpc
import pytest

from ragtune.common.auth import KeyStore, create_key
from ragtune.common.errors import InvalidArgument, NotFound, Unauthenticated, to_status


def test_domain_errors_map_to_codes_and_name_the_field():
    assert to_status(InvalidArgument("must not be empty", field="question")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "question: must not be empty",
    )
    assert to_status(NotFound("collection 'x' not found"))[0] == grpc.StatusCode.NOT_FOUND


def test_unexpected_errors_do_not_leak_details():
    code, details = to_status(KeyError("/secret/path/to/file.py line 12"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in details and "Traceback" not in details


def test_errors_seen_through_ray_keep_their_code():
    from ray.exceptions import RayTaskError

    cause = NotFound("adapter 'x' not found")
    wrapped = RayTaskError("Embed", "Traceback (most recent call last): ...", cause)
    assert to_status(wrapped) == (grpc.StatusCode.NOT_FOUND, "adapter 'x' not found")
    dual = wrapped.as_instanceof_cause()
    assert to_status(dual) == (grpc.StatusCode.NOT_FOUND, "adapter 'x' not found")


def test_keys_map_to_tenants_and_are_stored_hashed(tmp_path):
    keys_file = tmp_path / "keys.yaml"
    key_a = create_key(keys_file, "acme", admin=True)
    key_b = create_key(keys_file, "globex")
    assert key_a not in keys_file.read_text()
    store = KeyStore.load(keys_file)
    assert store.principal_for({"authorization": f"Bearer {key_a}"}).tenant == "acme"
    assert store.principal_for({"authorization": f"Bearer {key_a}"}).admin
    assert store.principal_for({"authorization": f"bearer {key_b}"}).tenant == "globex"
    assert not store.principal_for({"authorization": f"Bearer {key_b}"}).admin


@pytest.mark.parametrize(
    "metadata", [{}, {"authorization": "Bearer nope"}, {"authorization": "Basic abc"}]
)
def test_missing_or_unknown_keys_are_unauthenticated(tmp_path, metadata):
    keys_file = tmp_path / "keys.yaml"
    create_key(keys_file, "acme")
    with pytest.raises(Unauthenticated):
        KeyStore.load(keys_file).principal_for(metadata)
