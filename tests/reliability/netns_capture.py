"""Run by the sealed netns test in the gateway's namespace (as root): every frame on eth0, as captured by an
AF_PACKET socket, appended to FILE (4-byte length, frame) until SIGTERM. A packet capture without tcpdump.

    python -m tests.reliability.netns_capture FILE
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from types import FrameType

ETH_P_ALL = 0x0003
FRAME_BYTES_MAX = 65535


def main() -> None:
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    capture.bind(("eth0", 0))
    with open(sys.argv[1], "wb") as out:

        def stop(signum: int, frame: FrameType | None) -> None:
            out.flush()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        print(json.dumps({"capturing": "eth0"}), flush=True)
        while True:
            data = capture.recv(FRAME_BYTES_MAX)
            out.write(len(data).to_bytes(4, "big") + data)
            out.flush()


if __name__ == "__main__":
    main()
