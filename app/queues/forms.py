from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app.params import IdField


class BulkForm(FlaskForm):
    """The selection arrives as repeated `selected_ids` fields (read with getlist)."""

    action = HiddenField(validators=[DataRequired(), Length(max=16)])
    assignee_id = IdField(validators=[Optional()])
    queue = HiddenField(validators=[Optional(), Length(max=80)])
    filters = HiddenField(validators=[Optional(), Length(max=1000)])


class SaveViewForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])
    queue = HiddenField(validators=[DataRequired(), Length(max=80)])
    filters = HiddenField(validators=[Optional(), Length(max=1000)])
