import pytest

from nnshrink.utils.references import (
    ReferenceError_,
    call_with_supported,
    import_callable,
    is_reference,
)


def test_references_import_what_the_user_named():
    assert import_callable("tests.usercode:make_model")().head.out_features == 3
    assert is_reference("a.b:c.d") and not is_reference("a.b") and not is_reference("resnet20")
    with pytest.raises(ReferenceError_, match="has no attribute 'missing'"):
        import_callable("tests.usercode:missing")
    with pytest.raises(ReferenceError_, match="not a callable"):
        import_callable("tests.usercode:__name__")


def test_call_with_supported_passes_only_accepted_options():
    assert call_with_supported(lambda **kw: kw, {}, {"batch_size": 8}) == {"batch_size": 8}
    assert call_with_supported(lambda a=1: a, {}, {"batch_size": 8}) == 1
