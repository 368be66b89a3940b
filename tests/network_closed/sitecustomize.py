"""Imported by every Python process that a test runs with this folder on PYTHONPATH: the network is closed.

An internet socket's connect is refused and written to the file that PEFTCODE_CONNECTS_LOG names, so that
the test sees every attempt, even one that its caller catches and passes over (Unix sockets, which the
sandbox's processes use among themselves, stay open).
"""

import os
import socket
import sys


def _refuse_the_network(event: str, args: tuple) -> None:
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        with open(os.environ["PEFTCODE_CONNECTS_LOG"], "a") as log:
            log.write(f"{' '.join(sys.argv[:3])} -> {args[1]}\n")
        raise OSError(101, "the network is closed by the test")


sys.addaudithook(_refuse_the_network)
