"""``python -m services.control``: run the control service."""

from services.control.server import build_server
from services.control.settings import ControlSettings
from shared.rpc.entrypoint import serve


def main() -> None:
    serve(ControlSettings(), build_server)


if __name__ == "__main__":
    main()
