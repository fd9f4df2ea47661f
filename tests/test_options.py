"""The options table: every bad input fails at decoration time, naming the option and the
bad value."""

from __future__ import annotations

import re

import pytest

import remotefn
from remotefn import remote
from remotefn.options import OPTIONS, resolve


def work(x):
    return x


class NotPath:
    pass


def names_option_and_value(message, names, value):
    """The message names every option in ``names`` (as a word) and shows ``value``."""
    return all(re.search(rf"\b{name}\b", message) for name in names) and value in message


BAD = [
    # (options, exception, the value as the message must show it); the message must also
    # name every option given
    ({"cores": 0}, ValueError, "0"),
    ({"cores": -3}, ValueError, "-3"),
    ({"cores": 1.5}, TypeError, "1.5"),
    ({"cores": "4"}, TypeError, "'4'"),
    ({"cores": True}, TypeError, "True"),
    ({"cores": None}, TypeError, "None"),
    ({"threads_per_core": 0}, ValueError, "0"),
    ({"threads_per_core": 2.0}, TypeError, "2.0"),
    ({"threads_per_core": "two"}, TypeError, "'two'"),
    ({"gpus": -1}, ValueError, "-1"),
    ({"gpus": 0.5}, TypeError, "0.5"),
    ({"gpus_per_core": -2}, ValueError, "-2"),
    ({"gpus_per_core": "1"}, TypeError, "'1'"),
    ({"cwd": 42}, TypeError, "42"),
    ({"cwd": ""}, ValueError, "''"),
    ({"cwd": NotPath()}, TypeError, "NotPath"),
    ({"env": ["A=1"]}, TypeError, "['A=1']"),
    ({"env": {"A": 1}}, TypeError, "1"),
    ({"env": {1: "a"}}, TypeError, "1"),
    ({"env": {"A=B": "x"}}, ValueError, "'A=B'"),
    ({"env": {"": "x"}}, ValueError, "''"),
    ({"block": "yes"}, TypeError, "'yes'"),
    ({"block": 1}, TypeError, "1"),
    ({"max_workers": 0}, ValueError, "0"),
    ({"max_workers": 2.5}, TypeError, "2.5"),
    ({"init": "loader"}, TypeError, "'loader'"),
    ({"init": lambda: {}}, ValueError, "block=True"),
    ({"timeout": 0}, ValueError, "0"),
    ({"timeout": -1.0}, ValueError, "-1.0"),
    ({"timeout": "10s"}, TypeError, "'10s'"),
    ({"timeout": float("inf")}, ValueError, "inf"),
    ({"timeout": float("nan")}, ValueError, "nan"),
    ({"retries": -1}, ValueError, "-1"),
    ({"retries": 1.0}, TypeError, "1.0"),
    ({"cache": "yes"}, TypeError, "'yes'"),
    ({"cache_salt": 3}, TypeError, "3"),
    ({"cache_key": "args"}, TypeError, "'args'"),
    ({"extras": ["--exclusive"]}, TypeError, "['--exclusive']"),
    ({"extras": {1: "x"}}, TypeError, "1"),
    ({"corse": 2}, TypeError, "'corse'"),
    ({"gpus": 1, "gpus_per_core": 1}, TypeError, "gpus_per_core"),
]


@pytest.mark.parametrize("options, error, text", BAD, ids=[str(o) for o, _, _ in BAD])
def test_bad_option_fails_at_decoration_naming_the_option_and_the_value(options, error, text):
    with pytest.raises(error) as raised:
        remote(**options)(work)
    assert type(raised.value) is error
    assert names_option_and_value(str(raised.value), options, text), str(raised.value)


@pytest.mark.parametrize("options, error, text", BAD[:10], ids=[str(o) for o, _, _ in BAD[:10]])
def test_bad_option_fails_in_options_and_function_form(options, error, text):
    for make in (lambda: remote(work).options(**options), lambda: remote(work, **options)):
        with pytest.raises(error) as raised:
            make()
        assert type(raised.value) is error
        assert names_option_and_value(str(raised.value), options, text), str(raised.value)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TypeError) as raised:
        remote(work, ranks=2)
    message = str(raised.value)
    assert "'ranks'" in message
    for name in OPTIONS:
        assert name in message


def test_cache_true_needs_a_cache_directory(local):
    with pytest.raises(ValueError, match="cache_directory"):
        local.submit(remote(work, cache=True), 1)


def test_alias_gpus_per_core_means_gpus():
    assert resolve({"gpus_per_core": 2}).gpus == 2


def test_valid_options_are_normalised():
    options = remote(work, threads_per_core=2, env={"B": "2", "A": "1"}, timeout=3,
                     block=True, max_workers=2, retries=1).remote_options
    assert options.threads_per_core == 2
    assert options.env == (("A", "1"), ("B", "2"))
    assert options.timeout == 3.0 and isinstance(options.timeout, float)
    assert options.block and options.max_workers == 2 and options.retries == 1


def test_unknown_extras_are_refused_at_submission(local):
    handle = remote(work, extras={"partition": "debug"})
    with pytest.raises(ValueError, match="partition"):
        local.submit(handle, 1)


def test_a_call_larger_than_the_session_is_refused_at_submission(local):
    with pytest.raises(ValueError, match="8 cores but the session has 4"):
        local.submit(remote(work, threads_per_core=8), 1)
    with pytest.raises(ValueError, match="5 cores but the session has 4"):
        local.submit(remote(work, cores=5), 1)
    with pytest.raises(ValueError, match="1 GPUs but the session has 0"):
        local.submit(remote(work, gpus=1), 1)
    with pytest.raises(ValueError, match="max_workers=3"):
        local.submit(remote(work, threads_per_core=2, block=True, max_workers=3), 1)


@pytest.mark.parametrize("settings, error, text", [
    ({"backend": "pbs"}, ValueError, "'pbs'"),
    ({"backend": 3}, TypeError, "3"),
    ({"max_cores": 0}, ValueError, "0"),
    ({"max_cores": "4"}, TypeError, "'4'"),
    ({"transport": "udp"}, ValueError, "'udp'"),
    ({"forward_output": "no"}, TypeError, "'no'"),
    ({"start_timeout": 0}, ValueError, "0"),
    ({"gpu_ids": [0, 0]}, ValueError, "[0, 0]"),
    ({"colour": "red"}, TypeError, "colour"),
])
def test_bad_session_settings_name_the_setting_and_the_value(settings, error, text):
    with pytest.raises(error) as raised:
        remotefn.session(**{"backend": "local", **settings})
    assert type(raised.value) is error
    assert names_option_and_value(str(raised.value), settings, text), str(raised.value)


def test_flux_backend_without_flux_python_says_what_is_missing():
    import importlib.util

    if importlib.util.find_spec("flux") is not None:
        pytest.skip("flux-python is installed here")
    from remotefn.errors import MissingDependency

    with pytest.raises(MissingDependency, match="flux start"):
        remotefn.session("flux")
