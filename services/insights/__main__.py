"""``python -m services.insights``: run the insights service."""

from services.insights.server import build_server
from services.insights.settings import InsightsSettings
from shared.rpc.entrypoint import serve


def main() -> None:
    serve(InsightsSettings(), build_server)


if __name__ == "__main__":
    main()
