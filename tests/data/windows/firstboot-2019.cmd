@echo off
rem vm2kvm first boot: run once as SYSTEM before logon through HKLM\SYSTEM\Setup CmdLine;
rem it removes that hook itself and gives up after 3 runs, so it can never loop.
setlocal EnableExtensions
set "V=%SystemRoot%\vm2kvm"
set "LOG=%V%\firstboot.log"
set RUNS=0
set PENDING=
if exist "%V%\runs" set /p RUNS=<"%V%\runs"
set /a RUNS=RUNS+1
>"%V%\runs" echo %RUNS%
>>"%LOG%" echo === %DATE% %TIME% vm2kvm first boot, run %RUNS% of 3
if %RUNS% GEQ 4 goto giveup
>>"%LOG%" echo --- install driver netkvm.inf
pnputil -i -a "%SystemRoot%\Drivers\VirtIO\netkvm\netkvm.inf" >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
>>"%LOG%" echo --- install driver balloon.inf
pnputil -i -a "%SystemRoot%\Drivers\VirtIO\balloon\balloon.inf" >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
>>"%LOG%" echo --- install the QEMU guest agent
msiexec.exe /i "%V%\qemu-ga-x86_64.msi" /qn /norestart /l*v "%V%\qemu-ga-install.log" >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
>>"%LOG%" echo --- uninstall VMware Tools
msiexec.exe /x {7BD5F6A8-2D91-4B4B-9B23-0E8B3F3C5B0A} /qn /norestart >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
>>"%LOG%" echo --- static IP for 52-54-00-12-34-56 (was vmxnet3 Ethernet Adapter)
set "NIC="
set TRIES=0
:wait_nic0
for /f "tokens=1 delims=," %%a in ('getmac /fo csv /nh /v ^| find /i "52-54-00-12-34-56"') do set "NIC=%%~a"
if defined NIC goto found_nic0
set /a TRIES+=1
if %TRIES% GEQ 30 goto missing_nic0
ping -n 3 127.0.0.1 >nul
goto wait_nic0
:missing_nic0
>>"%LOG%" echo no adapter with MAC 52-54-00-12-34-56 yet: tried again at the next boot
set PENDING=1
goto next_nic0
:found_nic0
>>"%LOG%" echo adapter "%NIC%"
netsh interface ip set address name="%NIC%" static 192.168.10.20 255.255.255.0 192.168.10.1 1 >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
netsh interface ip add address name="%NIC%" 192.168.10.21 255.255.255.0 >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
netsh interface ip set dns name="%NIC%" static 192.168.10.2 >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
netsh interface ip add dns name="%NIC%" 192.168.10.3 index=2 >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
:next_nic0
>>"%LOG%" echo --- bring every disk online
diskpart /s "%V%\disks.txt" >>"%LOG%" 2>&1
>>"%LOG%" echo exit code %ERRORLEVEL%
if not defined PENDING goto finish
if %RUNS% GEQ 3 goto giveup
>>"%LOG%" echo === steps pending: running again at the next boot
exit /b 0
:giveup
>>"%LOG%" echo === giving up after 3 runs: see the lines above
:finish
reg add "HKLM\SYSTEM\Setup" /v CmdLine /t REG_SZ /d "" /f >>"%LOG%" 2>&1
reg add "HKLM\SYSTEM\Setup" /v SetupType /t REG_DWORD /d 0 /f >>"%LOG%" 2>&1
>>"%LOG%" echo === done
exit /b 0
