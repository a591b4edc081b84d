"""Every name the package exports resolves (lazily) to a real object."""

import lightning_alchemist


def test_every_export_resolves():
    for name in lightning_alchemist.__all__:
        assert getattr(lightning_alchemist, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute"):
        lightning_alchemist.NotAThing  # noqa: B018
