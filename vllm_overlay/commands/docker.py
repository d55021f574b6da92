"""`docker`: build the Docker image (needs a Docker engine)."""

from vllm_overlay.publishing import docker


def add(sub) -> None:
    p = sub.add_parser("docker", help="build the Docker image (needs a Docker engine)")
    p.add_argument("--mode", default="overlay", choices=["overlay", "source"])
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.add_argument("--image", help="image name:tag (default vllm-overlay:<VERSION>)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--print", action="store_true", help="only print the docker command")
    p.set_defaults(func=run)


def run(args) -> None:
    extra = dict(kv.split("=", 1) for kv in args.build_arg)
    docker.build_image(args.mode, args.arch, args.image, extra, print_only=args.print)
