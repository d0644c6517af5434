"""The command-line tools, one module each, with `main(argv=None)`: `jaxcap <command>` and the
root scripts (train.py, sample.py, evaluate.py, serve.py) call them.

    train     train.py: train (or resume) a captioner in a workdir
    sample    caption image files and folders
    evaluate  score a split (or a results file) with the COCO caption metrics
    serve     an HTTP server and a page
    export    a workdir's model -> one file
"""
