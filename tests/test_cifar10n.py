"""CIFAR-10N: the real file reads without torch, and hostile pickles are refused."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

import tfq_noise  # noqa: F401
from tfq_noise.data import cifar10n


def _write_pt(path, payload: bytes, member: str = "archive/data.pkl") -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
        archive.writestr("archive/version", "3\n")
    return str(path)


def test_real_file_rates_and_order(cifar10n_path, official_order_labels):
    labels = cifar10n.load_human_labels(str(cifar10n_path))
    for key in ("clean_label", *cifar10n.NOISE_TYPES.values()):
        assert labels[key].shape == (50_000,) and labels[key].dtype == np.int64
    np.testing.assert_array_equal(labels["clean_label"], official_order_labels["train"])
    rates = cifar10n.measured_noise_rates(labels)
    assert rates["aggre"] == pytest.approx(0.09, abs=0.005)
    for name in ("random1", "random2", "random3"):
        assert 0.17 <= rates[name] <= 0.185
    assert rates["worst"] == pytest.approx(0.40, abs=0.01)
    np.testing.assert_array_equal(cifar10n.human_noisy_labels(labels, "worst"), labels["worse_label"])


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("make_payload", [lambda marker: {"clean_label": _RunsCommand(f"touch {marker}")},
                                          lambda marker: _RunsCommand(f"touch {marker}"),
                                          lambda marker: {"x": _Evaluates()}])
def test_code_running_pickle_is_refused_and_not_run(tmp_path, make_payload):
    marker = tmp_path / "ran"
    path = _write_pt(tmp_path / "evil.pt", pickle.dumps(make_payload(marker), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        cifar10n.load_human_labels(path)
    assert not marker.exists()


def test_codecs_encode_is_limited_to_latin1(tmp_path):
    # A hand-written protocol-2 pickle: _codecs.encode('x', 'rot13').
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        cifar10n.load_human_labels(_write_pt(tmp_path / "codec.pt", payload))


def test_persistent_ids_are_refused(tmp_path):
    payload = b"\x80\x02X\x03\x00\x00\x00abcQ."  # BINPERSID, as torch tensors are stored
    with pytest.raises(pickle.UnpicklingError, match="PyTorch tensors"):
        cifar10n.load_human_labels(_write_pt(tmp_path / "tensor.pt", payload))


def test_numpy_dict_roundtrip_and_shape_checks(tmp_path):
    good = {key: np.arange(50_000) % 10 for key in ("clean_label", *cifar10n.NOISE_TYPES.values())}
    loaded = cifar10n.load_human_labels(_write_pt(tmp_path / "good.pt", pickle.dumps(good, protocol=2)))
    assert set(loaded) == set(good) and all(np.array_equal(loaded[k], good[k]) for k in good)
    short = dict(good, aggre_label=np.zeros(49_999, np.int64))
    with pytest.raises(ValueError, match="49999"):
        cifar10n.load_human_labels(_write_pt(tmp_path / "short.pt", pickle.dumps(short, protocol=2)))
    missing = {k: v for k, v in good.items() if k != "worse_label"}
    with pytest.raises(ValueError, match="worse_label"):
        cifar10n.load_human_labels(_write_pt(tmp_path / "missing.pt", pickle.dumps(missing, protocol=2)))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        cifar10n.load_human_labels(str(tmp_path / "absent.pt"))
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        cifar10n.load_human_labels(str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="data.pkl"):
        cifar10n.load_human_labels(_write_pt(tmp_path / "other.pt", b"", member="archive/other.pkl"))
    with pytest.raises(ValueError, match="valid: aggre"):
        cifar10n.human_noisy_labels({}, "noisy")
