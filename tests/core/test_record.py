"""Record: the dataclass behaviour the per-request values kept (equality, repr, replace)."""

import pytest

from proxy.core.http1.messages import Body, RequestHead
from proxy.core.pool import Checkout


def head(**changes):
    fields = dict(method=b"GET", target=b"/", version=b"1.1", headers=[], framing=0,
                  content_length=-1, keep_alive=True, expect_continue=False, host=b"a")
    fields.update(changes)
    return RequestHead(**fields)


def test_equal_when_every_field_is_equal():
    assert head() == head()
    assert head() != head(target=b"/other")
    assert head() != head(request_id=b"7")  # a defaulted field counts too


def test_never_equal_to_another_type_with_the_same_fields():
    assert Checkout("reuse") != ("reuse", None, None)
    assert Body(b"x") != Checkout("x")
    assert Body(b"x") != (b"x",)


def test_unhashable_like_a_mutable_dataclass():
    with pytest.raises(TypeError):
        hash(Body(b"x"))


def test_repr_names_the_class_and_fields():
    assert repr(Checkout("reuse")) == "Checkout(action='reuse', server=None, connection=None)"


def test_replace_copies_and_changes_only_the_named_fields():
    original = head()
    changed = original.replace(upgrade=True)
    assert type(changed) is RequestHead and changed.upgrade is True
    assert original.upgrade is False
    assert changed == head(upgrade=True)
