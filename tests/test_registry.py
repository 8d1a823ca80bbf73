"""The weights registry: names, URLs and checksums of the official files."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from anyseg.errors import UnknownModelError
from anyseg.models.registry import REGISTRY, ModelSpec, get_spec, list_specs

EXPECTED = {
    "sam2.1-tiny": ("sam2", "sam2.1_hiera_t"),
    "sam2.1-small": ("sam2", "sam2.1_hiera_s"),
    "sam2.1-base-plus": ("sam2", "sam2.1_hiera_b+"),
    "sam2.1-large": ("sam2", "sam2.1_hiera_l"),
    "sam2-tiny": ("sam2", "sam2_hiera_t"),
    "sam2-small": ("sam2", "sam2_hiera_s"),
    "sam2-base-plus": ("sam2", "sam2_hiera_b+"),
    "sam2-large": ("sam2", "sam2_hiera_l"),
    "sam-vit-b": ("sam", "sam_vit_b"),
    "sam-vit-l": ("sam", "sam_vit_l"),
    "sam-vit-h": ("sam", "sam_vit_h"),
    "mobile-sam": ("sam", "mobile_sam_vit_t"),
}


def test_every_expected_name_resolves_to_its_family_and_preset():
    assert set(REGISTRY) == set(EXPECTED)
    for name, (family, preset) in EXPECTED.items():
        spec = get_spec(name)
        assert spec.name == name
        assert (spec.family, spec.preset) == (family, preset)
        assert spec.description


def test_list_specs_is_the_registry_in_order():
    assert [s.name for s in list_specs()] == list(REGISTRY)


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        get_spec("sam-vit-b").url = "https://example.com/x.pth"  # type: ignore[misc]


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.name)
def test_url_is_https_and_ends_with_the_filename(spec: ModelSpec):
    url = urlparse(spec.url)
    assert url.scheme == "https"
    assert url.path.rsplit("/", 1)[-1] == spec.filename


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.name)
def test_sha256_is_64_lowercase_hex_digits(spec: ModelSpec):
    # Every official file has a checksum confirmed in independent sources.
    assert spec.sha256 is not None
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)


def test_checksums_are_distinct():
    digests = [s.sha256 for s in list_specs()]
    assert len(set(digests)) == len(digests)


def test_official_hosts():
    for spec in list_specs():
        host = urlparse(spec.url).netloc
        assert host == ("github.com" if spec.name == "mobile-sam" else "dl.fbaipublicfiles.com")
        if spec.name.startswith("sam2.1-"):
            assert "/segment_anything_2/092824/" in spec.url
        elif spec.name.startswith("sam2-"):
            assert "/segment_anything_2/072824/" in spec.url


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(UnknownModelError) as info:
        get_spec("sam2.1-tinny")
    message = str(info.value)
    assert "'sam2.1-tinny'" in message
    assert "Did you mean 'sam2.1-tiny'" in message
    for name in REGISTRY:
        assert name in message


def test_unknown_name_without_close_match_still_lists_all():
    with pytest.raises(UnknownModelError) as info:
        get_spec("resnet50")
    assert "Did you mean" not in str(info.value)
    assert "mobile-sam" in str(info.value)


def test_unknown_model_error_is_a_key_error():
    with pytest.raises(KeyError):
        get_spec("nope")
