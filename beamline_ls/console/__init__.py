"""The operator console: a web page that shows the microscope live and drives it.

``beamline-ls console`` serves it on loopback. One process bridges Channel Access to
the browsers (:mod:`.bridge`): it subscribes once to the IOC's PVs, keeps the newest
value of each and the newest frame of each camera (:mod:`.slot`), and every browser
reads from that shared state over a WebSocket (:mod:`.app`). However many browsers
watch, the IOC serves one client, so acquisition and writing are the same with or
without them. Images are binned and encoded once per frame and contrast setting
(:mod:`.encode`) and shared by the browsers that ask for them.
"""
