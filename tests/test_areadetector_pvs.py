"""Every PV that ophyd's stock areaDetector classes and ADCore's standard screens use
exists on the camera IOC (issue 11, items 2 and 3).

The screen lists are the PV names (facts, not code) that ADCore's Phoebus screens
(ADApp/op/bob/autoconvert/*.bob) address under ``$(P)$(R)``.
"""

from __future__ import annotations

import pytest
from ophyd import Device
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.plugins import HDF5Plugin, ImagePlugin

from beamline_ls.hardware.camera import SimCamera
from beamline_ls.iocs.camera import CameraGroup
from beamline_ls.sim.microscope import SimMicroscope

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

PREFIX = "PV:"
SCREENS = {
    "cam1:": {
        "ADSetup": "ADCoreVersion_RBV AsynIO.CNCT DriverVersion_RBV FirmwareVersion_RBV "
                   "Manufacturer_RBV Model_RBV PortName_RBV SDKVersion_RBV SerialNumber_RBV",
        "ADCollect": "Acquire AcquireBusy AcquirePeriod AcquirePeriod_RBV AcquireTime "
                     "AcquireTime_RBV ArrayCallbacks ArrayCallbacks_RBV ArrayCounter "
                     "ArrayCounter_RBV ArrayRate_RBV DetectorState_RBV ImageMode "
                     "ImageMode_RBV NumExposures NumExposures_RBV NumImages "
                     "NumImagesCounter_RBV NumImages_RBV NumQueuedArrays StatusMessage_RBV "
                     "TimeRemaining_RBV TriggerMode TriggerMode_RBV WaitForPlugins",
        "ADReadout": "ArraySizeX_RBV ArraySizeY_RBV ArraySize_RBV BinX BinX_RBV BinY BinY_RBV "
                     "ColorMode ColorMode_RBV DataType DataType_RBV Gain Gain_RBV "
                     "MaxSizeX_RBV MaxSizeY_RBV MinX MinX_RBV MinY MinY_RBV ReverseX "
                     "ReverseX_RBV ReverseY ReverseY_RBV SizeX SizeX_RBV SizeY SizeY_RBV",
        "ADShutter": "ShutterCloseDelay ShutterControl ShutterMode ShutterOpenDelay "
                     "ShutterStatusEPICS_RBV ShutterStatus_RBV",
        "ADAttrFile": "NDAttributesFile NDAttributesMacros NDAttributesStatus",
        "ADBuffers": "EmptyFreeList NumPreAllocBuffers PoolAllocBuffers PoolFreeBuffers "
                     "PoolMaxMem PoolPollStats.SCAN PoolUsedBuffers PoolUsedMem "
                     "PreAllocBuffers",
    },
}
PLUGIN_BASE = (
    "ADCoreVersion_RBV ArrayCallbacks ArrayCallbacks_RBV ArrayCounter ArrayCounter_RBV "
    "ArrayRate_RBV ArraySize0_RBV ArraySize1_RBV ArraySize2_RBV ColorMode_RBV DataType_RBV "
    "DriverVersion_RBV DroppedArrays DroppedArrays_RBV EnableCallbacks EnableCallbacks_RBV "
    "ExecutionTime_RBV MinCallbackTime MinCallbackTime_RBV NDArrayAddress NDArrayAddress_RBV "
    "NDArrayPort NDArrayPort_RBV NDimensions_RBV PluginType_RBV PortName_RBV ProcessPlugin "
    "QueueFree QueueSize TimeStamp_RBV UniqueId_RBV Codec_RBV CompressedSize_RBV")
SCREENS["image1:"] = {"NDPluginBase": PLUGIN_BASE}
SCREENS["HDF1:"] = {
    "NDPluginBase": PLUGIN_BASE,
    "NDFileBase": "AutoIncrement AutoIncrement_RBV AutoSave AutoSave_RBV Capture "
                  "Capture_RBV CreateDirectory CreateDirectory_RBV DeleteDriverFile "
                  "DeleteDriverFile_RBV FileName FileName_RBV FileNumber FileNumber_RBV "
                  "FilePath FilePathExists_RBV FilePath_RBV FileTemplate FileTemplate_RBV "
                  "FileWriteMode FileWriteMode_RBV FreeCapture FullFileName_RBV LazyOpen "
                  "LazyOpen_RBV NumCapture NumCapture_RBV NumCaptured_RBV ReadFile "
                  "ReadFile_RBV TempSuffix TempSuffix_RBV WriteFile WriteFile_RBV "
                  "WriteMessage WriteStatus",
    "NDFile": "FileFormat FileFormat_RBV",
    "NDFileHDF5": "BloscCompressor BloscCompressor_RBV BloscLevel BloscLevel_RBV "
                  "BloscShuffle BloscShuffle_RBV BoundaryAlign BoundaryAlign_RBV "
                  "BoundaryThreshold BoundaryThreshold_RBV ChunkSize2 ChunkSize2_RBV "
                  "ChunkSizeAuto ChunkSizeAuto_RBV Compression Compression_RBV "
                  "DataBitsOffset DataBitsOffset_RBV FillValue FillValue_RBV FlushNow "
                  "IOSpeed JPEGQuality JPEGQuality_RBV NumColChunks NumColChunks_RBV "
                  "NumDataBits NumDataBits_RBV NumFramesChunks NumFramesChunks_RBV "
                  "NumFramesFlush NumFramesFlush_RBV NumRowChunks NumRowChunks_RBV RunTime "
                  "SWMRActive_RBV SWMRCbCounter_RBV SWMRMode SWMRMode_RBV "
                  "SWMRSupported_RBV SZipNumPixels SZipNumPixels_RBV StoreAttr "
                  "StoreAttr_RBV StorePerform StorePerform_RBV XMLErrorMsg_RBV XMLFileName "
                  "XMLFileName_RBV XMLValid_RBV ZLevel ZLevel_RBV",
}


# state names as ADCore's records word them (ZNAM/ONAM, ZRST...): screens show them
# and clients put them as strings; some readbacks word a state differently
STATES = {
    "cam1:Acquire": "Done Acquire",
    "cam1:PreAllocBuffers": "Done Allocate",
    "cam1:ShutterControlEPICS": "Closed Open",
    "cam1:ShutterMode": "None|EPICS PV|Detector output",
    "cam1:ShutterMode_RBV": "None|EPICS PV|Camera output",
    "HDF1:Capture": "Done Capture",
    "HDF1:Capture_RBV": "Done Capturing",
    "HDF1:WriteFile": "Done Write",
    "HDF1:WriteFile_RBV": "Done Writing",
    "HDF1:ReadFile": "Done Read",
    "HDF1:ReadFile_RBV": "Done Reading",
    "HDF1:FreeCapture": "Done Free",
    "HDF1:WriteStatus": "Write OK|Write error",
    "HDF1:FilePathExists_RBV": "No Yes",
    "HDF1:FileWriteMode": "Single Capture Stream",
    "HDF1:Compression": "None N-bit szip zlib Blosc BSLZ4 LZ4 JPEG",
    "HDF1:BloscCompressor": "BloscLZ LZ4 LZ4HC SNAPPY ZLIB ZSTD",
    "HDF1:BloscCompressor_RBV": "BloscLZ LZ4 LZ4HC SNAPPY ZLIB ZSTD",
    "HDF1:BloscShuffle": "None Byte Bit",
    "HDF1:BloscShuffle_RBV": "None Byte Bit",
    "HDF1:SWMRSupported_RBV": "Not Supported|Supported",
}


@pytest.fixture(scope="module")
def group(tmp_path_factory) -> CameraGroup:
    return CameraGroup(prefix=PREFIX, driver=SimCamera(SimMicroscope()),
                       data_root=tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def served(group) -> set[str]:
    """Every name a client can reach on the camera IOC: PVs and record fields."""
    names = set(group.pvdb)
    for name, instance in group.pvdb.items():
        for field in getattr(instance, "fields", {}) or {}:
            names.add(f"{name}.{field}")
    return names


def ophyd_pvs(cls: type[Device], prefix: str = "") -> set[str]:
    """The PV names a stock ophyd device class reads and writes."""
    out: set[str] = set()
    for cpt in cls._sig_attrs.values():
        if issubclass(cpt.cls, Device):
            out |= ophyd_pvs(cpt.cls, prefix + cpt.suffix)
            continue
        if cpt.suffix is None:  # derived signals (shaped image, configuration names)
            continue
        kwargs = cpt.kwargs
        if "write_pv" in kwargs:
            out |= {prefix + cpt.suffix, prefix + kwargs["write_pv"]}
        elif "WithRBV" in cpt.cls.__name__ or cpt.cls.__name__ == "EpicsPathSignal":
            out |= {prefix + cpt.suffix, prefix + cpt.suffix + "_RBV"}
        else:
            out.add(prefix + cpt.suffix)
    return out


@pytest.mark.parametrize("cls, plugin", [(AreaDetectorCam, "cam1:"),
                                         (ImagePlugin, "image1:"), (HDF5Plugin, "HDF1:")])
def test_every_pv_of_ophyds_stock_class_exists(served, cls, plugin):
    wanted = {PREFIX + plugin + name for name in ophyd_pvs(cls)}
    assert len(wanted) > 40
    assert sorted(wanted - served) == []


@pytest.mark.parametrize("plugin, screen", [(p, s) for p in SCREENS for s in SCREENS[p]])
def test_adcore_screens_find_their_pvs(served, plugin, screen):
    wanted = [PREFIX + plugin + name for name in SCREENS[plugin][screen].split()]
    missing = [name for name in wanted if name not in served]
    assert len(missing) <= 0.1 * len(wanted), missing


def test_states_are_named_as_adcore_names_them(group):
    for name, words in STATES.items():
        wanted = words.split("|") if "|" in words else words.split()
        assert list(group.pvdb[PREFIX + name].enum_strings) == wanted, name


def test_a_readback_shows_the_setting_in_its_own_words():
    """A setting whose readback words its states differently (areaDetector's WriteFile
    "Write" reads back "Writing") shows each state, by position, in the readback's."""
    import asyncio

    from caproto.server import PVGroup

    from beamline_ls.iocs.ad_params import setting

    class Group(PVGroup):
        write_file, write_file_rbv = setting("WriteFile", "Done", enum_strings=["Done", "Write"],
                                             rbv_enum_strings=["Done", "Writing"])

    g = Group(prefix="T:")

    async def put_and_read() -> list[str]:
        seen = []
        for state in ("Write", "Done"):
            await g.write_file.write(state)
            seen.append(g.write_file_rbv.value)
        return seen

    assert asyncio.run(put_and_read()) == ["Writing", "Done"]


def test_a_plugin_counts_a_dropped_array_as_dropped_not_as_processed(tmp_path):
    """ADCore's plugins count in ArrayCounter the arrays they processed and in
    DroppedArrays the ones they could not: the two add up to the arrays sent. image1
    counted every array in both (100 frames: ArrayCounter +100, DroppedArrays +79)."""
    import asyncio

    import numpy as np

    from beamline_ls.frame import Frame

    group = CameraGroup(prefix="DROP:", driver=SimCamera(SimMicroscope()), data_root=tmp_path)
    image1 = group.image

    async def send_ten_then_publish() -> tuple[int, int]:
        await image1.min_callback_time.write(0.0)  # every array offered to the plugin
        for i in range(10):  # no live view sends meanwhile: each replaces the unsent one
            image1.receive(Frame(np.zeros((4, 4), np.uint16), i, float(i), 0.001))
        await image1.publish()
        return image1.array_counter_rbv.value, image1.dropped_arrays_rbv.value

    processed, dropped = asyncio.run(send_ten_then_publish())
    assert (processed, dropped) == (1, 9)
