"""``python -m services.learning``: run the learning service."""

from services.learning.server import build_server
from services.learning.settings import LearningSettings
from shared.rpc.entrypoint import serve


def main() -> None:
    serve(LearningSettings(), build_server)


if __name__ == "__main__":
    main()
