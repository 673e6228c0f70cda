"""Stop requests: Ctrl-C and kill raise KeyboardInterrupt at once, or at the next item inside deferred_interrupts."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from vitune.runtime.signals import clear_stop_request, deferred_interrupts, raise_if_stopped, request_stop


@pytest.fixture(autouse=True)
def no_stop_left():
    clear_stop_request()
    yield
    clear_stop_request()


def test_a_stop_raises_where_the_program_stands_and_is_remembered_until_cleared():
    raise_if_stopped()  # nothing requested: nothing raised
    with pytest.raises(KeyboardInterrupt):
        request_stop(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        raise_if_stopped()
    clear_stop_request()
    raise_if_stopped()


def test_inside_deferred_interrupts_the_loop_raises_at_its_next_item():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            for item in range(5):
                raise_if_stopped()
                done.append(item)
                if item == 2:
                    request_stop(signal.SIGINT, None)  # only remembered here
    assert done == [0, 1, 2]
    with pytest.raises(KeyboardInterrupt):  # the block is over: a stop raises at once again
        request_stop(signal.SIGINT, None)


def test_a_real_kill_stops_a_deferred_loop_at_an_item_boundary():
    code = (
        "import os, signal, sys\n"
        "from vitune.runtime.signals import deferred_interrupts, raise_if_stopped, request_stop\n"
        "signal.signal(signal.SIGTERM, request_stop)\n"
        "done = 0\n"
        "try:\n"
        "    with deferred_interrupts():\n"
        "        for item in range(10):\n"
        "            raise_if_stopped()\n"
        "            if item == 3:\n"
        "                os.kill(os.getpid(), signal.SIGTERM)\n"  # delivered mid-item: the item still finishes
        "            done += 1\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped after', done, 'items')\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert finished.stdout.strip() == "stopped after 4 items"
