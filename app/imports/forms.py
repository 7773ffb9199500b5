"""Forms of the import pages."""
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from app.imports.formats import FORMATS


class UploadForm(FlaskForm):
    format = RadioField("The file holds", choices=[SelectChoice(f.name, f.label)
                                                   for f in FORMATS.values()],
                        default="billing_export", validators=[DataRequired()])
    source_system = StringField("Source system", validators=[Optional(), Length(max=64)],
                                description="Items are unique per source system and reference; "
                                            "leave empty for the format's default.")
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file.")])


class ConfirmForm(FlaskForm):
    pass
