"""Meta-device parameters for the calling thread only: another thread's modules stay real, and
overlapping uses from several threads leave nn.Module unpatched at the end."""

from __future__ import annotations

import threading

from torch import nn

from shared.meta_init import empty_parameters


def test_only_the_calling_thread_gets_meta_parameters() -> None:
    original = nn.Module.register_parameter
    inside, done = threading.Event(), threading.Event()
    devices: dict[str, str] = {}

    def meta_thread() -> None:
        with empty_parameters():
            devices["inside"] = nn.Linear(4, 4).weight.device.type
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=meta_thread)
    thread.start()
    assert inside.wait(10)
    devices["other thread, meanwhile"] = nn.Linear(4, 4).weight.device.type
    with empty_parameters():  # a second, overlapping user
        devices["nested user"] = nn.Linear(4, 4).bias.device.type
    devices["after the nested user left"] = nn.Linear(4, 4).weight.device.type
    done.set()
    thread.join(10)
    assert devices == {"inside": "meta", "other thread, meanwhile": "cpu", "nested user": "meta",
                       "after the nested user left": "cpu"}
    assert nn.Module.register_parameter is original
    assert nn.Linear(2, 2).weight.device.type == "cpu"
