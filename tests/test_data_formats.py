"""File-name parser on the real GSV-XS / SF-XS / Tokyo-XS name shapes."""

from __future__ import annotations

import pytest

from vpr_tune.data.formats import format_name, parse_name, utm_to_latlon
from vpr_tune.errors import UserError

SF_DB = (
    "@0543054.81@4180505.57@10@S@037.77087@-122.51113@91v00dfETJ4DjDI7udN8xg@@90@@@@201904@@.jpg"
)
SF_TEST_Q = "@0543263.69@4179336.01@10@S@037.76031@-122.50882@51321055860@@@@@@20210718@@.jpg"
TOKYO_Q = "@0381523.71@3946790.15@54@S@035.65786@0139.69112@00685.jpg@@@@@@@@.jpg"
TOKYO_DB = "@0381422.85@3946520.47@54@S@035.65541@0139.69005@jT6GeuhOPrPM6Khj-vMA6g@05@@@@@@@.jpg"
GSV = (
    "train/bangkok/@0660563.65@1516745.84@47@P@013.71541@0100.48486@mHq6ocn8sYGs6oodHGRcnw"
    "@@412@@@@201705@1_Bangkok@.jpg"
)


def test_sf_database_name() -> None:
    m = parse_name(SF_DB)
    assert (m.utm_east, m.utm_north) == (543054.81, 4180505.57)
    assert (m.utm_zone, m.utm_letter) == ("10", "S")
    assert m.lat == pytest.approx(37.77087) and m.lon == pytest.approx(-122.51113)
    assert m.pano_id == "91v00dfETJ4DjDI7udN8xg"
    assert m.heading == 90.0 and m.timestamp == "201904" and m.note == ""


def test_sf_test_query_flickr_name_without_heading() -> None:
    m = parse_name(SF_TEST_Q)
    assert (m.utm_east, m.utm_north) == (543263.69, 4179336.01)
    assert m.heading is None and m.timestamp == "20210718" and m.pano_id == "51321055860"


def test_tokyo_query_with_jpg_inside_a_field() -> None:
    m = parse_name(TOKYO_Q)
    assert (m.utm_east, m.utm_north) == (381523.71, 3946790.15)
    assert m.pano_id == "00685.jpg" and m.note == "" and m.timestamp == ""


def test_tokyo_database_tile_field() -> None:
    m = parse_name(TOKYO_DB)
    assert m.tile == "05" and m.heading is None and m.utm_north == 3946520.47


def test_gsv_train_name_with_folder_and_place_note() -> None:
    m = parse_name(GSV)
    assert m.note == "1_Bangkok" and m.timestamp == "201705" and m.heading == 412.0
    assert m.utm_zone == "47" and m.utm_letter == "P"


def test_negative_coordinates_and_extra_at_sign() -> None:
    name = "@-0000123.50@-4180505.57@10@S@-37.5@-122.5@pa@no@@90@@@@201904@x@42_City@.jpg"
    m = parse_name(name)
    assert (m.utm_east, m.utm_north) == (-123.5, -4180505.57)
    assert m.note == "42_City"  # the note is always split('@')[-2]
    assert m.lat == -37.5


def test_short_name_with_only_utm() -> None:
    m = parse_name("@12.5@34.0@.jpg")
    assert (m.utm_east, m.utm_north) == (12.5, 34.0)
    assert m.note == "" and m.heading is None


@pytest.mark.parametrize(
    "name", ["photo.jpg", "@@4180505.57@10@S@.jpg", "@abc@def@10@S@@.jpg", "@nan@1@.jpg", ""]
)
def test_unparseable_utm_is_a_user_error_naming_the_file(name: str) -> None:
    with pytest.raises(UserError, match="UTM") as err:
        parse_name(f"/data/sf_xs/val/queries/{name}")
    assert "/data/sf_xs/val/queries/" in str(err.value)


def test_format_name_round_trips_and_is_zero_padded() -> None:
    name = format_name(543054.81, 4180505.57, 10, "S", 37.77087, -122.51113, "pano", "", 90,
                       "201904", "")
    assert name == SF_DB.replace("91v00dfETJ4DjDI7udN8xg", "pano")
    m = parse_name(format_name(1.5, 2.5, 47, "P", 13.7, 100.4, note="3_Bangkok"))
    assert (m.utm_east, m.utm_north, m.note) == (1.5, 2.5, "3_Bangkok")


def test_utm_to_latlon_matches_real_names() -> None:
    lat, lon = utm_to_latlon(543054.81, 4180505.57, 10, northern=True)
    assert lat == pytest.approx(37.77087, abs=2e-5) and lon == pytest.approx(-122.51113, abs=2e-5)
    lat, lon = utm_to_latlon(660563.65, 1516745.84, 47, northern=True)
    assert lat == pytest.approx(13.71541, abs=2e-5) and lon == pytest.approx(100.48486, abs=2e-5)
