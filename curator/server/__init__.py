"""A local teacher server speaking the OpenAI and Anthropic wire formats, for tests,
benchmarks and the offline demo. See :mod:`curator.server.app`."""

from curator.server.app import SAMPLE_HEADER, TeacherServer, serve
from curator.server.config import ServerConfig

__all__ = ["SAMPLE_HEADER", "ServerConfig", "TeacherServer", "serve"]
