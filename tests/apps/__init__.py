"""Host apps the tests serve as processes of their own (``flask run``, gunicorn)."""
