"""A stand-in for a network that fails: a TCP relay between devices and the server that cuts every connection
the moment a request starting with ``trigger`` passes half-way, then drops all traffic until ``restore()``.
(A real link cannot be cut on cue on one machine without privileges over the other engineer's processes.)"""
from __future__ import annotations

import socket
import threading

from conftest import free_port


class NetCut:
    def __init__(self, target_port: int, trigger: bytes) -> None:
        self.target_port, self.trigger = target_port, trigger
        self.port = free_port()
        self.down = False
        self.cut_once = threading.Event()  # set when a request was cut half-way
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:  # the link is gone: nothing gets through
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if self.down:
                    break
                if upstream and not self.cut_once.is_set() and data.startswith(self.trigger):
                    sink.sendall(data[: len(data) // 2])  # half the request reaches the server, then the cut
                    self.down = True
                    self.cut_once.set()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
