"""`python -m distillab.scaling ...` = `distillab scaling ...`."""

from distillab.scaling.cli import main

if __name__ == "__main__":
    main()
