"""`python -m localimg` runs the same CLI as the `localimg` console script."""

from localimg.cli import main

if __name__ == "__main__":
    main()
