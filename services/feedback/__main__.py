"""``python -m services.feedback``: run the feedback service."""

from services.feedback.server import build_server
from services.feedback.settings import FeedbackSettings
from shared.rpc.entrypoint import serve


def main() -> None:
    serve(FeedbackSettings(), build_server)


if __name__ == "__main__":
    main()
