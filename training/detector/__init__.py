"""The YOLO tumour localizer: YOLO-format export of the training cases, offline training, evaluation, shipping."""
