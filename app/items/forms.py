from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.params import IdField, WholeNumberField


class ActionForm(FlaskForm):
    action = HiddenField(validators=[DataRequired(), Length(max=32)])
    version = WholeNumberField(validators=[Optional()])
    comment = TextAreaField(validators=[Optional(), Length(max=5000)])
    resolution_code = StringField(validators=[Optional(), Length(max=64)])
    adjustment_amount = StringField(validators=[Optional(), Length(max=32)])
    amount = StringField(validators=[Optional(), Length(max=32)])  # a requester's correction
    assignee_id = IdField(validators=[Optional()])


class CommentForm(FlaskForm):
    comment = TextAreaField("Comment", validators=[DataRequired(), Length(max=5000)])


class AttachForm(FlaskForm):
    version = WholeNumberField(validators=[Optional()])
